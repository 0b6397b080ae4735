"""Integer counterparts of the fake-quant layers, with their integer constants.

Each tensor flowing through the engine is an integer tensor whose real value is
``values * unit`` with a positive per-channel ``unit`` known at conversion time.
The units never enter the forward pass: conversion turns them into integer
constants (fixed-point multipliers, integer biases), so the forward pass is
integer-only.

=================================  ==============================================
fake-quant (training)              integer engine
=================================  ==============================================
QConv input quantizer              :class:`IntConv` input requantization:
                                   ``clamp(round((x * M0) >> n), 0, Qp)`` with
                                   ``M0 * 2^-n = unit_in / s_x`` per channel
QConv weight quantizer + conv      :class:`IntConv` int64 weight codes, integer
                                   convolution (accumulator unit ``s_x * s_w``)
QBN / per-level BN after the conv  :class:`IntConv` integer bias ``B`` (per level)
                                   and the sign of ``g'``; ``|g'| * S`` becomes
                                   the output unit (merged into the next requant)
ReLU                               clamp at 0
QAdd                               :class:`IntAdd`: per-channel alignment to the
                                   smaller unit with QAdd's fixed-point ratios
max pooling / nearest upsampling   the same on integers (exact)
=================================  ==============================================
"""
from typing import List, Optional, Sequence

import torch
from torch import nn

from . import ops


def _stack_or_none(items: Sequence[Optional[torch.Tensor]]) -> Optional[torch.Tensor]:
    if all(i is None for i in items):
        return None
    return torch.stack(list(items))


class IntConv(nn.Module):
    """Integer form of ``[requant ->] conv [-> BN] [-> ReLU]`` for one or more levels.

    Args:
        name (str): The fake-quant layer's module name (for messages).
        weight (Tensor): int64 weight codes, ``(C_out, C_in/groups, kh, kw)``.
        stride, padding, dilation, groups: The conv's geometry.
        in_m0 (list[Tensor], optional): Per level, int64 ``(C_in,)`` mantissas of
            the input requantization; None for an input that is already integer
            codes (the image).
        in_shift (list[Tensor], optional): Per level, the matching right shifts.
        in_range (tuple[int, int]): Code range of the input quantizer.
        bias (list[Tensor | None]): Per level, int64 ``(C_out,)`` bias in
            accumulator units, or None.
        sign (list[Tensor | None]): Per level, int64 ``(C_out,)`` of +-1 (sign of
            the folded BN multiplier), or None.
        relu (bool): Apply ReLU to the output.
        out_unit (list[Tensor]): Per level, the float64 ``(C_out,)`` real unit of
            the output (metadata for conversion and post-processing).
        w_bits (int, optional): The weight quantizer's declared bit width (metadata
            for export: Clip's odd codes need one bit more). Defaults to None
            (unknown).
    """

    def __init__(self, name: str, weight: torch.Tensor, stride, padding, dilation, groups: int,
                 in_m0: Optional[List[torch.Tensor]], in_shift: Optional[List[torch.Tensor]],
                 in_range, bias: List[Optional[torch.Tensor]],
                 sign: List[Optional[torch.Tensor]], relu: bool,
                 out_unit: List[torch.Tensor], w_bits: Optional[int] = None) -> None:
        super().__init__()
        self.name = name
        self.w_bits = None if w_bits is None else int(w_bits)
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.in_range = tuple(int(v) for v in in_range)
        self.relu = relu
        self.num_levels = len(out_unit)
        self.register_buffer('weight', weight.to(torch.int64))
        self.register_buffer('in_m0', None if in_m0 is None else torch.stack(in_m0))
        self.register_buffer('in_shift', None if in_shift is None else torch.stack(in_shift))
        self.register_buffer('bias', _stack_or_none(bias))
        self.register_buffer('sign', _stack_or_none(sign))
        self.register_buffer('out_unit', torch.stack(out_unit).to(torch.float64))

    def forward(self, x: torch.Tensor, level: int = 0, arith: str = 'int') -> torch.Tensor:
        """Requantize the input, convolve, add the bias, apply the sign and the ReLU.

        Args:
            x (Tensor): Integer input values (unit: the previous layer's output unit).
            level (int): Pyramid level (selects the per-level constants). Defaults to 0.
            arith (str): ``'int'`` (the engine) or ``'float'`` (the simulation).

        Returns:
            Tensor: Integer outputs in ``out_unit[level]``.
        """
        if not 0 <= level < self.num_levels:
            raise IndexError(f'{self.name}: level {level} is out of range for '
                             f'{self.num_levels} levels')
        if self.in_m0 is not None:
            x = ops.requantize(x, self.in_m0[level], self.in_shift[level], *self.in_range,
                               arith)
        out = ops.conv2d(x, self.weight, None if self.bias is None else self.bias[level],
                         self.stride, self.padding, self.dilation, self.groups, arith)
        if self.sign is not None:
            out = out * ops.as_arith(self.sign[level], arith).view(1, -1, 1, 1)
        return ops.relu(out) if self.relu else out

    def unit_list(self) -> List[torch.Tensor]:
        """list[Tensor]: The output unit of every level."""
        return [self.out_unit[level] for level in range(self.num_levels)]

    def extra_repr(self) -> str:
        return (f'{self.name!r}, weight={tuple(self.weight.shape)}, levels={self.num_levels}, '
                f'requant={self.in_m0 is not None}, relu={self.relu}')


class IntAdd(nn.Module):
    """Integer form of :class:`~mmaqd.quant.QAdd`: align both operands, add, optional ReLU.

    Args:
        name (str): The QAdd's module name.
        mantissa_x (Tensor): int64 ``(C,)`` fixed-point ratios ``unit_x / out_unit``.
        mantissa_y (Tensor): int64 ``(C,)`` ratios ``unit_y / out_unit``.
        frac_bits (int): Fraction bits of the ratios.
        relu (bool): Apply ReLU after the add (residual blocks).
        out_unit (Tensor): float64 ``(C,)`` unit of the sum, ``min(unit_x, unit_y)``.
    """

    def __init__(self, name: str, mantissa_x: torch.Tensor, mantissa_y: torch.Tensor,
                 frac_bits: int, relu: bool, out_unit: torch.Tensor) -> None:
        super().__init__()
        self.name = name
        self.frac_bits = frac_bits
        self.relu = relu
        self.register_buffer('mantissa_x', mantissa_x.to(torch.int64))
        self.register_buffer('mantissa_y', mantissa_y.to(torch.int64))
        self.register_buffer('out_unit', out_unit.to(torch.float64))

    def forward(self, x: torch.Tensor, y: torch.Tensor, arith: str = 'int') -> torch.Tensor:
        """``relu?(round(x * Mx) + round(y * My))`` in ``out_unit``."""
        out = (ops.rescale_fixed(x, self.mantissa_x, self.frac_bits, arith) +
               ops.rescale_fixed(y, self.mantissa_y, self.frac_bits, arith))
        return ops.relu(out) if self.relu else out

    def extra_repr(self) -> str:
        return f'{self.name!r}, frac_bits={self.frac_bits}, relu={self.relu}'
