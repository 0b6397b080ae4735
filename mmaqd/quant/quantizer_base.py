"""Common interface of all fake quantizers (bits handling, identity at 32 bits)."""
from typing import Optional, Tuple

import torch
from torch import nn

from .bits import check_bits, integer_range, is_full_precision


class Quantizer(nn.Module):
    """Base class of the uniform fake quantizers.

    A quantizer maps a real tensor ``x`` to ``codes * scale`` where ``codes`` are
    integers and ``scale`` is a per-tensor or per-output-channel real number. At 32
    bits it is the identity and returns its input unchanged (the same tensor).

    Per-channel scales are along dim 0, the output channels of a conv weight.

    The quantizer's own parameters (a learned step, a clipping value) require
    gradients only while it quantizes: at 32 bits they are unused, and DDP refuses
    trainable parameters that take no part in the loss.

    Subclasses implement :meth:`_fake_quantize`, :meth:`integer_codes` and
    :meth:`get_scale`, and may react to a bit-width change in :meth:`_bits_changed`.

    Args:
        bits (int): Bit width: 2..8, or 32 for full precision.
        signed (bool): Signed codes (weights, signed inputs) or unsigned ones
            (post-ReLU activations).
        per_channel (bool): One scale per output channel instead of one per tensor.
            Defaults to False.
        num_channels (int): Number of output channels; used only if ``per_channel``.
            Defaults to 1.
        name (str, optional): How errors name this quantizer, e.g.
            ``'QConv weight quantizer'``. Defaults to the class name.
    """

    def __init__(self,
                 bits: int,
                 signed: bool,
                 *,
                 per_channel: bool = False,
                 num_channels: int = 1,
                 name: Optional[str] = None) -> None:
        super().__init__()
        self.name = name or type(self).__name__
        self._bits = check_bits(bits, self.name)
        if per_channel and (isinstance(num_channels, bool) or not isinstance(num_channels, int)
                            or num_channels < 1):
            raise ValueError(f'{self.name}: per_channel needs a positive int num_channels, '
                             f'got {num_channels!r}')
        self.signed = bool(signed)
        self.per_channel = bool(per_channel)
        self.num_scales = num_channels if per_channel else 1
        #: Round ties up (``floor(v + 1/2)``), as the integer engine's requantization
        #: does, instead of to even (integer-aware QAT; see :mod:`.integer_aware`).
        self.round_half_up = False
        #: In eval mode, compute the codes as the integer engine does from the
        #: producer's integers (:class:`~mmaqd.quant.integer_aware.EngineRequant`).
        self.engine_requant = None

    @classmethod
    def for_weights(cls, bits: int, out_channels: int, per_channel: bool,
                    name: str) -> 'Quantizer':
        """Build the quantizer for a conv weight (signed codes).

        Args:
            bits (int): Bit width.
            out_channels (int): Output channels of the weight.
            per_channel (bool): One scale per output channel.
            name (str): Name used in errors.

        Returns:
            Quantizer: The weight quantizer.
        """
        return cls(bits, True, per_channel=per_channel, num_channels=out_channels, name=name)

    @classmethod
    def for_activations(cls, bits: int, signed: bool, name: str) -> 'Quantizer':
        """Build a per-tensor quantizer for activations.

        Args:
            bits (int): Bit width.
            signed (bool): Signed codes.
            name (str): Name used in errors.

        Returns:
            Quantizer: The activation quantizer.
        """
        return cls(bits, signed, name=name)

    def register_parameter(self, name: str, param: Optional[nn.Parameter]) -> None:
        """Register a parameter, trainable only while the quantizer is enabled."""
        super().register_parameter(name, param)
        if param is not None:
            param.requires_grad_(self.enabled)

    @property
    def bits(self) -> int:
        """int: The current bit width (32 means not quantized)."""
        return self._bits

    @property
    def enabled(self) -> bool:
        """bool: False at 32 bits, where the quantizer is the identity."""
        return not is_full_precision(self._bits)

    @property
    def code_range(self) -> Tuple[int, int]:
        """tuple[int, int]: Smallest and largest integer code ``(Qn, Qp)``."""
        return integer_range(self._bits, self.signed)

    def set_bits(self, bits: int, adapt: bool = True) -> None:
        """Change the bit width at run time.

        Args:
            bits (int): New bit width: 2..8, or 32 for full precision.
            adapt (bool): Adapt the learned state to the new width (e.g. rescale the
                LSQ step). False when the state about to be loaded already belongs
                to ``bits`` (restoring a checkpoint). Defaults to True.
        """
        new_bits = check_bits(bits, self.name)
        old_bits, self._bits = self._bits, new_bits
        if new_bits != old_bits:
            for param in self.parameters(recurse=False):
                param.requires_grad_(self.enabled)
            self._range_changed(new_bits)
            if adapt:
                self._bits_changed(old_bits, new_bits)

    def _range_changed(self, new_bits: int) -> None:
        """Reconfigure anything that depends on the code range; nothing by default.

        Called on every change of the bit width, also when restoring a checkpoint.

        Args:
            new_bits (int): New bit width (already stored in ``self.bits``).
        """

    def _bits_changed(self, old_bits: int, new_bits: int) -> None:
        """Adapt learned state after :meth:`set_bits`; nothing to adapt by default.

        Args:
            old_bits (int): Previous bit width.
            new_bits (int): New bit width (already stored in ``self.bits``).
        """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fake-quantize ``x``.

        Args:
            x (Tensor): Input; for per-channel quantizers dim 0 is the channel dim.

        Returns:
            Tensor: ``codes * scale`` with the shape of ``x``, or ``x`` itself at 32 bits.
        """
        if not self.enabled:
            return x
        if self.engine_requant is not None and not self.training:
            return self.engine_requant(x, self.code_range, self._channel_view(
                self.get_scale(), x.dim()))
        return self._fake_quantize(x)

    def _fake_quantize(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def integer_codes(self, x: torch.Tensor) -> torch.Tensor:
        """The integer codes of ``x``, such that ``codes * scale == forward(x)``.

        Args:
            x (Tensor): Input.

        Returns:
            Tensor: int32 codes with the shape of ``x``.
        """
        raise NotImplementedError

    def get_scale(self) -> torch.Tensor:
        """The real value of one code step.

        Returns:
            Tensor: Detached scale of shape ``(1,)`` or ``(num_channels,)``.
        """
        raise NotImplementedError

    def set_scale(self, scale: torch.Tensor) -> None:
        """Set the real value of one code step from calibration statistics.

        Args:
            scale (Tensor): Positive scale of shape ``(1,)`` or ``(num_channels,)``.

        Raises:
            NotImplementedError: For quantizers whose scale is not a learned
                parameter (the min-max observers track their range themselves).
        """
        raise NotImplementedError(f'{self.name}: {type(self).__name__} has no settable scale')

    def calibration_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the codes are computed from, for calibration statistics.

        Args:
            x (Tensor): The quantizer's input.

        Returns:
            Tensor: ``x`` itself unless the quantizer transforms it first.
        """
        return x

    def _check_enabled(self) -> None:
        if not self.enabled:
            raise RuntimeError(f'{self.name}: at {self._bits} bits there are no integer codes '
                               f'or scale (the quantizer is the identity)')

    def _channel_view(self, t: torch.Tensor, ndim: int) -> torch.Tensor:
        """Shape a ``(num_scales,)`` tensor to broadcast against an ``ndim``-dim input."""
        if self.per_channel:
            return t.view(-1, *([1] * (ndim - 1)))
        return t

    def extra_repr(self) -> str:
        return (f'bits={self._bits}, signed={self.signed}, per_channel={self.per_channel}'
                f'{f", num_channels={self.num_scales}" if self.per_channel else ""}')
