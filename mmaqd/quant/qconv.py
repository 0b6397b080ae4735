"""Conv2d with fake-quantized input and weight."""
from typing import Optional, Tuple, Union

import torch
from torch import nn

from .bits import check_bits
from .quantizer_base import Quantizer
from .quantizer_types import get_quantizer_type

_INPUT_QUANT_MODES = ('unsigned', 'signed', None)


class QConv(nn.Conv2d):
    """A drop-in :class:`torch.nn.Conv2d` that fake-quantizes its input and weight.

    The positional and keyword arguments of ``nn.Conv2d`` are accepted unchanged
    (so mmcv's ``build_conv_layer`` can build it from ``conv_cfg``); the
    quantization settings are keyword-only. The input is quantized before the
    convolution pads it: 0 is a valid code of every input quantizer with a zero
    level, so padding the quantized input is exact. The bias, if any, stays float.
    At 32 bits both quantizers are the identity and the layer computes exactly
    what ``nn.Conv2d`` computes.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
            bias, padding_mode, device, dtype: As for :class:`torch.nn.Conv2d`.
        w_bits (int): Weight bit width, 2..8 or 32 (not quantized). Defaults to 32.
        a_bits (int): Input bit width, 2..8 or 32 (not quantized). Defaults to 32.
        quantizer (str): Quantizer type for input and weight: ``'LSQ'``, ``'Clip'``
            or ``'MinMax'``. Defaults to ``'LSQ'``.
        input_quant (str, optional): ``'unsigned'`` for post-ReLU inputs,
            ``'signed'`` for inputs that can be negative, or None for an input that
            is already integer (the stem's image); ``a_bits`` is then unused.
            Defaults to ``'unsigned'``.
        w_per_channel (bool): One weight scale per output channel. Defaults to False.
        num_levels (int): Number of private input quantizers, one per pyramid level,
            for a conv shared across the levels of a feature pyramid (AQD heads: one
            activation quantizer per level, like the per-level BN); ``forward`` then
            takes the level index. Defaults to 1.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kernel_size: Union[int, Tuple[int, int]],
                 stride: Union[int, Tuple[int, int]] = 1,
                 padding: Union[int, Tuple[int, int], str] = 0,
                 dilation: Union[int, Tuple[int, int]] = 1,
                 groups: int = 1,
                 bias: bool = True,
                 padding_mode: str = 'zeros',
                 device=None,
                 dtype=None,
                 *,
                 w_bits: int = 32,
                 a_bits: int = 32,
                 quantizer: str = 'LSQ',
                 input_quant: Optional[str] = 'unsigned',
                 w_per_channel: bool = False,
                 num_levels: int = 1) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, device, dtype)
        owner = type(self).__name__
        if isinstance(num_levels, bool) or not isinstance(num_levels, int) or num_levels < 1:
            raise ValueError(f'{owner}: num_levels must be a positive int, got {num_levels!r}')
        self.num_levels = num_levels
        if input_quant not in _INPUT_QUANT_MODES:
            raise ValueError(f'{owner}: input_quant={input_quant!r} is invalid; expected one '
                             f'of {_INPUT_QUANT_MODES}')
        self.input_quant = input_quant
        self.w_per_channel = w_per_channel
        if input_quant is None:
            # Unused, but a wrong value in a config is still a mistake worth reporting.
            check_bits(a_bits, f'{owner} input quantizer')
        self._build_quantizers(quantizer, w_bits, a_bits)
        #: Bits of the last state loaded into this layer, ``(w_bits, a_bits)``, or None.
        self.loaded_bits = None
        #: Compute as the integer engine does (see :mod:`~mmaqd.quant.integer_aware`):
        #: the bias on the accumulator grid and, in eval mode, an exact convolution of
        #: the integer codes.
        self.integer_aware = False

    def _build_quantizers(self, quantizer: str, w_bits: int, a_bits: int) -> None:
        owner = type(self).__name__
        quantizer_type = get_quantizer_type(quantizer, owner)
        self.quantizer = quantizer
        self.weight_quantizer = quantizer_type.for_weights(
            w_bits, self.out_channels, self.w_per_channel, name=f'{owner} weight quantizer')
        self.input_quantizers = nn.ModuleList()
        if self.input_quant is not None:
            for level in range(self.num_levels):
                suffix = f' (level {level})' if self.num_levels > 1 else ''
                self.input_quantizers.append(quantizer_type.for_activations(
                    a_bits, self.input_quant == 'signed',
                    name=f'{owner} input quantizer{suffix}'))

    @property
    def input_quantizer(self) -> Optional[Quantizer]:
        """Quantizer, optional: The input quantizer (of level 0), None for an integer input."""
        return self.input_quantizers[0] if len(self.input_quantizers) else None

    def set_quantizer_type(self, quantizer: str) -> None:
        """Replace both quantizers by fresh ones of another type, keeping the bits.

        The new quantizers start uninitialised (their scales come from data).

        Args:
            quantizer (str): ``'LSQ'``, ``'Clip'`` or ``'MinMax'``.
        """
        if quantizer == self.quantizer:
            return
        a_bits = self.a_bits if self.a_bits is not None else 32
        device = self.weight.device
        self._build_quantizers(quantizer, self.w_bits, a_bits)
        self.to(device)

    @property
    def w_bits(self) -> int:
        """int: Weight bit width."""
        return self.weight_quantizer.bits

    @property
    def a_bits(self) -> Optional[int]:
        """int, optional: Input bit width, None if the input is not quantized."""
        return None if self.input_quantizer is None else self.input_quantizer.bits

    def set_bits(self, w_bits: Optional[int] = None, a_bits: Optional[int] = None,
                 adapt: bool = True) -> None:
        """Change the bit widths at run time; None leaves a width unchanged.

        Args:
            w_bits (int, optional): New weight bit width.
            a_bits (int, optional): New input bit width (of every level); ignored
                without an input quantizer.
            adapt (bool): Adapt the quantizers' learned state to the new widths; see
                :meth:`Quantizer.set_bits`. Defaults to True.
        """
        if w_bits is not None:
            self.weight_quantizer.set_bits(w_bits, adapt)
        if a_bits is not None:
            for quantizer in self.input_quantizers:
                quantizer.set_bits(a_bits, adapt)

    def _check_level(self, level: int) -> None:
        if not 0 <= level < self.num_levels:
            raise IndexError(f'{type(self).__name__}: level {level} is out of range for '
                             f'num_levels={self.num_levels}')

    def accumulator_unit(self, level: int = 0) -> torch.Tensor:
        """The real value of one unit of the integer accumulator, ``S = s_x * s_w``.

        An input without quantizer is taken to be integer already (``s_x = 1``).
        Requires zero points of 0 (always so for LSQ and Clip quantizers).

        Args:
            level (int): Pyramid level whose input quantizer is meant. Defaults to 0.

        Returns:
            Tensor: Detached unit of shape ``(1,)`` or ``(out_channels,)``.
        """
        self._check_level(level)
        s_w = self.weight_quantizer.get_scale()
        if self.input_quantizer is None:
            return s_w
        return self.input_quantizers[level].get_scale() * s_w

    def get_extra_state(self) -> torch.Tensor:
        """The bit widths, saved with the layer so that its scales are read back right.

        A tensor, not a dict: mmengine broadcasts every state-dict entry under DDP.

        Returns:
            Tensor: int64 ``[w_bits, a_bits]``, ``a_bits`` 0 without an input quantizer.
        """
        return torch.tensor([self.w_bits, self.a_bits or 0], dtype=torch.int64)

    def set_extra_state(self, state: Union[torch.Tensor, dict]) -> None:
        """Remember the bit widths a loaded state was saved with.

        They are not applied: the model's configuration (or a bit-width schedule
        restored first) decides the bits. A detector compares them after loading
        and refuses steps that belong to other bits; see :attr:`loaded_bits`.

        Args:
            state (Tensor | dict): ``[w_bits, a_bits]`` from :meth:`get_extra_state`,
                or the ``dict(w_bits=..., a_bits=...)`` of checkpoints saved before.
        """
        if isinstance(state, dict):
            self.loaded_bits = (state.get('w_bits'), state.get('a_bits'))
            return
        w_bits, a_bits = (int(b) for b in state.tolist())
        self.loaded_bits = (w_bits, a_bits or None)

    def forward(self, x: torch.Tensor, level: int = 0) -> torch.Tensor:
        """Quantize the input (with the level's quantizer) and the weight, then convolve.

        Args:
            x (Tensor): Input of shape (N, C, H, W).
            level (int): Pyramid level of ``x``; selects the input quantizer.
                Defaults to 0.

        Returns:
            Tensor: The convolution of the quantized input with the quantized weight.
        """
        if len(self.input_quantizers):
            self._check_level(level)
            x = self.input_quantizers[level](x)
        integer = self.integer_aware and self.weight_quantizer.enabled and (
            self.input_quantizer is None or self.input_quantizer.enabled)
        if not integer:
            return self._conv_forward(x, self.weight_quantizer(self.weight), self.bias)
        unit = self._exact_unit(level)
        grid_bias = None
        if self.bias is not None:  # as the engine: round(b / S) in float64
            with torch.no_grad():
                grid_bias = torch.round(self.bias.double() / unit) * unit
        if self.training:  # straight-through: the gradient of b itself
            bias = None if grid_bias is None else (
                grid_bias.to(self.bias.dtype) + (self.bias - self.bias.detach()))
            return self._conv_forward(x, self.weight_quantizer(self.weight), bias)
        return self._integer_conv(x, level, unit, grid_bias)

    def _exact_unit(self, level: int) -> torch.Tensor:
        """``S = s_x * s_w`` in float64, where the product of two float32 is exact."""
        s_w = self.weight_quantizer.get_scale().detach().double()
        if self.input_quantizer is None:
            return s_w
        return self.input_quantizers[level].get_scale().detach().double() * s_w

    @torch.no_grad()
    def _integer_conv(self, x: torch.Tensor, level: int, unit: torch.Tensor,
                      bias: Optional[torch.Tensor]) -> torch.Tensor:
        """Eval-mode integer-aware forward: ``S * conv(codes_x, codes_w) + bias``.

        The codes are convolved in float64, where every sum is exact, so the result
        is the engine's accumulator times its unit (``unit`` and ``bias`` in float64).
        """
        codes_w = self.weight_quantizer.integer_codes(self.weight).double()
        if self.input_quantizer is None:  # the integer image
            codes_x = x.double()
        else:
            s_x = self.input_quantizers[level].get_scale().double()
            codes_x = torch.round(x.double() / s_x)
        acc = self._conv_forward(codes_x, codes_w, None)
        out = acc * unit.double().view(1, -1, 1, 1)
        if bias is not None:
            out = out + bias.double().view(1, -1, 1, 1)
        return out.to(x.dtype)

    def extra_repr(self) -> str:
        return (f'{super().extra_repr()}, w_bits={self.w_bits}, a_bits={self.a_bits}, '
                f'quantizer={self.quantizer!r}, input_quant={self.input_quant!r}'
                f'{f", num_levels={self.num_levels}" if self.num_levels > 1 else ""}')
