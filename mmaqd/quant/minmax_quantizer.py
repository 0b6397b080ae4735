"""Min-max baseline quantizer: EMA min/max observer with torch.ao fake quantization."""
from typing import Optional

import torch
from torch.ao.quantization import (FakeQuantize, MovingAverageMinMaxObserver,
                                   MovingAveragePerChannelMinMaxObserver)

from .bits import FULL_PRECISION_BITS, integer_range
from .quantizer_base import Quantizer


class MinMaxQuantizer(Quantizer):
    """Fake quantizer whose range is an exponential moving average of min/max.

    The baseline AQD is compared against (FQN / torch.ao style): nothing is
    learned, the scale follows the observed range. Built on
    :class:`torch.ao.quantization.FakeQuantize` with a moving-average min-max
    observer; low bit widths use custom ``quant_min`` / ``quant_max``. Weights
    (signed) use the symmetric scheme (zero point 0, ``scale = max|x| /
    ((Qp - Qn) / 2)``), activations (unsigned) the affine one (``scale =
    (max - min) / (Qp - Qn)`` with the range widened to include 0, so post-ReLU
    inputs get zero point 0). Per-channel ranges are along dim 0.

    The observer runs in training mode only; in eval mode the last scale is used.
    A quantizer that never saw data in training mode has scale 1.

    Args:
        bits (int): Bit width: 2..8, or 32 for full precision (identity).
        signed (bool): Signed symmetric codes if True, else unsigned affine codes.
        per_channel (bool): One range per channel of dim 0. Defaults to False.
        num_channels (int): Size of dim 0; used only if ``per_channel``. Defaults to 1.
        averaging_constant (float): EMA weight of each new batch's min/max.
            Defaults to 0.01 (torch.ao's default).
        name (str, optional): How errors name this quantizer. Defaults to the class name.
    """

    def __init__(self,
                 bits: int,
                 signed: bool,
                 *,
                 per_channel: bool = False,
                 num_channels: int = 1,
                 averaging_constant: float = 0.01,
                 name: Optional[str] = None) -> None:
        super().__init__(bits, signed, per_channel=per_channel, num_channels=num_channels,
                         name=name)
        # The observer is built for 8 bits even when starting at 32, so that
        # set_bits can switch quantization on later.
        qn, qp = integer_range(8 if not self.enabled else self.bits, self.signed)
        if per_channel:
            observer = MovingAveragePerChannelMinMaxObserver
            qscheme = torch.per_channel_symmetric if signed else torch.per_channel_affine
            extra = dict(ch_axis=0)
        else:
            observer = MovingAverageMinMaxObserver
            qscheme = torch.per_tensor_symmetric if signed else torch.per_tensor_affine
            extra = {}
        self.fake_quant = FakeQuantize(
            observer=observer,
            quant_min=qn,
            quant_max=qp,
            dtype=torch.qint8 if signed else torch.quint8,
            qscheme=qscheme,
            averaging_constant=averaging_constant,
            **extra)

    def train(self, mode: bool = True) -> 'MinMaxQuantizer':
        """Set the mode; the observer follows it (tracks ranges only in training).

        Args:
            mode (bool): Training mode if True. Defaults to True.

        Returns:
            MinMaxQuantizer: self.
        """
        super().train(mode)
        self.fake_quant.enable_observer(mode)
        return self

    @property
    def observer(self) -> torch.nn.Module:
        """nn.Module: The torch.ao observer holding the EMA ``min_val`` / ``max_val``."""
        return self.fake_quant.activation_post_process

    def _range_changed(self, new_bits: int) -> None:
        """Switch the code range of the fake quantizer and its observer."""
        if new_bits == FULL_PRECISION_BITS:
            return
        qn, qp = self.code_range
        for holder in (self.fake_quant, self.observer):
            holder.quant_min, holder.quant_max = qn, qp

    def _bits_changed(self, old_bits: int, new_bits: int) -> None:
        """Recompute the scale from the observed range for the new code range."""
        if new_bits == FULL_PRECISION_BITS:
            return
        if self.observer.min_val.numel() and torch.isfinite(self.observer.min_val).all():
            scale, zero_point = self.fake_quant.calculate_qparams()
            self.fake_quant.scale.resize_(scale.shape).copy_(scale)
            self.fake_quant.zero_point.resize_(zero_point.shape).copy_(zero_point)

    def _fake_quantize(self, x: torch.Tensor) -> torch.Tensor:
        return self.fake_quant(x)

    def get_scale(self) -> torch.Tensor:
        """The scale last computed from the observed range.

        Returns:
            Tensor: Detached scale of shape ``(1,)`` or ``(num_channels,)``.
        """
        self._check_enabled()
        return self.fake_quant.scale.detach().clone()

    def get_zero_point(self) -> torch.Tensor:
        """The zero point (0 for signed, and for unsigned inputs that are never negative).

        Returns:
            Tensor: Integer zero point of shape ``(1,)`` or ``(num_channels,)``.
        """
        self._check_enabled()
        return self.fake_quant.zero_point.detach().clone()

    def integer_codes(self, x: torch.Tensor) -> torch.Tensor:
        """The codes relative to the zero point, ``clamp(round(x/s) + z, Qn, Qp) - z``.

        Args:
            x (Tensor): Input.

        Returns:
            Tensor: int32 codes; ``codes * get_scale()`` (broadcast along dim 0 for
            per-channel ranges) equals ``forward(x)`` without observer update.
        """
        self._check_enabled()
        qn, qp = self.code_range
        scale = self._channel_view(self.get_scale(), x.dim())
        zero_point = self._channel_view(self.get_zero_point(), x.dim()).to(x.dtype)
        # torch's fake-quant kernels multiply by the inverse scale; matching them
        # keeps ties rounding the same way.
        codes = (x.detach() * (1.0 / scale)).round().add(zero_point).clamp(qn, qp) - zero_point
        return codes.to(torch.int32)
