"""The AQD reference code's quantizer: learned clipping value, odd weight grid."""
from typing import Optional, Tuple

import torch
from torch import nn

from .fake_quantize import fake_quantize
from .quantizer_base import Quantizer
from .ste import clamp_min_ste


class ClipQuantizer(Quantizer):
    """Uniform quantizer with a learned clipping value ``a`` (AQD reference code).

    With ``n = 2^b - 1`` steps:

    * unsigned: ``x_hat = a * round(n * clip(x / a, 0, 1)) / n``; codes ``0..n``.
    * signed: ``x_hat = a * (2k / n - 1)`` with ``k = round(n * (clip(x / a, -1, 1) + 1) / 2)``,
      ``k = 0..n``: an odd grid without a zero level; codes ``2k - n`` are the odd
      numbers ``-n..n``.

    The scale of the codes is ``a / n`` in both cases. Rounding is straight-through;
    ``a`` gets the gradient of these formulas (with LSQ's convention that the ends
    of the range count as outside), not rescaled as in LSQ.
    The signed grid has no zero, so for a signed *input* (``QConv(input_quant=
    'signed', quantizer='Clip')``) zero padding is off the grid.
    ``a`` starts at 1.0 and is used as ``max(a, min_clip)`` (straight-through), so
    it stays strictly positive.

    Weights are standardised first, ``(w - mean(w)) / std(w)`` over the whole tensor
    with statistics treated as constants, as the reference code does; the
    following BN absorbs the lost scale. :meth:`for_weights` turns this on.

    Args:
        bits (int): Bit width: 2..8, or 32 for full precision (identity).
        signed (bool): Odd signed grid if True, else the unsigned grid.
        per_channel (bool): One clipping value per channel of dim 0. Defaults to False.
        num_channels (int): Size of dim 0; used only if ``per_channel``. Defaults to 1.
        standardize (bool): Standardise the input before quantizing. Defaults to False.
        min_clip (float): Smallest clipping value used in the forward pass.
            Defaults to 1e-8.
        name (str, optional): How errors name this quantizer. Defaults to the class name.
    """

    def __init__(self,
                 bits: int,
                 signed: bool,
                 *,
                 per_channel: bool = False,
                 num_channels: int = 1,
                 standardize: bool = False,
                 min_clip: float = 1e-8,
                 name: Optional[str] = None) -> None:
        super().__init__(bits, signed, per_channel=per_channel, num_channels=num_channels,
                         name=name)
        self.standardize = standardize
        self.min_clip = min_clip
        self.clip_value = nn.Parameter(torch.ones(self.num_scales))

    @classmethod
    def for_weights(cls, bits: int, out_channels: int, per_channel: bool,
                    name: str) -> 'ClipQuantizer':
        """Build the reference code's weight quantizer: standardised, odd grid.

        Args:
            bits (int): Bit width.
            out_channels (int): Output channels of the weight.
            per_channel (bool): One clipping value per output channel.
            name (str): Name used in errors.

        Returns:
            ClipQuantizer: The weight quantizer.
        """
        return cls(bits, True, per_channel=per_channel, num_channels=out_channels,
                   standardize=True, name=name)

    @property
    def levels(self) -> int:
        """int: Number of steps ``n = 2^b - 1``."""
        return 2**self.bits - 1

    @property
    def code_range(self) -> Tuple[int, int]:
        """tuple[int, int]: ``(-n, n)`` (odd codes only) if signed, else ``(0, n)``."""
        return (-self.levels if self.signed else 0), self.levels

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if not self.standardize:
            return x
        mean, std = x.detach().mean(), x.detach().std()
        return (x - mean) / std

    def _fake_quantize(self, x: torch.Tensor) -> torch.Tensor:
        # Both grids are the uniform fake quantizer in disguise, which lets them share
        # its fused kernel: unsigned is scale a/n on codes 0..n; signed is scale 2a/n
        # on codes 0..n applied to x + a, shifted back by -a. Autograd through
        # ``a / n`` and the shifts yields exactly the gradients of the clip formulas.
        x = self._prepare(x)
        n = self.levels
        a = clamp_min_ste(self.clip_value, self.min_clip)
        if self.signed:
            shift = self._channel_view(a, x.dim())
            return fake_quantize(x + shift, 2 * a / n, 0, n, half_up=self.round_half_up) - shift
        return fake_quantize(x, a / n, 0, n, half_up=self.round_half_up)

    def get_scale(self) -> torch.Tensor:
        """The value of one code, ``a / n``.

        Returns:
            Tensor: Detached scale of shape ``(1,)`` or ``(num_channels,)``.
        """
        self._check_enabled()
        return self.clip_value.detach().clamp_min(self.min_clip) / self.levels

    @torch.no_grad()
    def set_scale(self, scale: torch.Tensor) -> None:
        """Set the clipping value from the value of one code: ``a = scale * n``.

        Args:
            scale (Tensor): Scale of shape ``(1,)`` or ``(num_channels,)``.
        """
        self.clip_value.copy_((torch.as_tensor(scale, dtype=self.clip_value.dtype).reshape(
            self.clip_value.shape) * self.levels).clamp_min(self.min_clip))

    def calibration_input(self, x: torch.Tensor) -> torch.Tensor:
        """The standardised input if ``standardize``, else ``x``."""
        return self._prepare(x.detach())

    def integer_codes(self, x: torch.Tensor) -> torch.Tensor:
        """The integer codes: ``0..n`` unsigned, odd ``-n..n`` signed.

        Args:
            x (Tensor): Input (standardised here first if ``standardize``).

        Returns:
            Tensor: int32 codes; ``codes * get_scale()`` (broadcast along dim 0 for
            per-channel clipping values) equals ``forward(x)``.
        """
        self._check_enabled()
        x = self._prepare(x.detach())
        n = self.levels
        a = self._channel_view(self.clip_value.detach().clamp_min(self.min_clip), x.dim())
        # Same arithmetic as the forward pass, so that ties round the same way.
        if self.signed:
            k = ((x + a) / (2 * a / n)).clamp(0, n).round()
            return (2 * k - n).to(torch.int32)
        return (x / (a / n)).clamp(0, n).round().to(torch.int32)

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, standardize={self.standardize}'
