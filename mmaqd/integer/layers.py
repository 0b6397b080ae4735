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
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import torch
from torch import nn

from . import ops

#: Reads a program tensor by id (:func:`~mmaqd.integer.program.run_program`).
Reader = Callable[[int], torch.Tensor]


def plain_geometry(value: Union[int, str, Sequence[int]]) -> Union[int, str, List[int]]:
    """A conv / pool geometry argument as an int, a string or a list of ints."""
    if isinstance(value, str):
        return value
    if isinstance(value, (tuple, list, torch.Size)):
        return [int(v) for v in value]
    return int(value)


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

    op = 'conv'
    inputs = ('x', )

    def constants(self) -> Dict[str, Any]:
        """The layer's constants as a program stores them (tensors not copied).

        Returns:
            dict: ``op='conv'``, ``weight`` (int64 codes), ``num_levels``, ``in_range``,
            ``relu`` (0/1), ``stride``, ``padding``, ``dilation``, ``groups``, float64
            ``(levels, C)`` ``out_unit`` (metadata: the arithmetic never reads it) and,
            where the layer has them, int64 ``(levels, C)`` ``in_m0``, ``in_shift``,
            ``bias``, ``sign`` and the declared weight bits ``w_bits``.
        """
        consts = {'op': self.op, 'weight': self.weight, 'num_levels': self.num_levels,
                  'in_range': list(self.in_range), 'relu': int(self.relu),
                  'stride': plain_geometry(self.stride), 'padding': plain_geometry(self.padding),
                  'dilation': plain_geometry(self.dilation), 'groups': int(self.groups),
                  'out_unit': self.out_unit}
        for key in ('in_m0', 'in_shift', 'bias', 'sign'):
            if getattr(self, key) is not None:
                consts[key] = getattr(self, key)
        if self.w_bits is not None:
            consts['w_bits'] = self.w_bits
        return consts

    @staticmethod
    def compute(consts: Dict[str, Any], x: torch.Tensor, level: int, arith: str,
                name: str) -> torch.Tensor:
        """Requantize the input, convolve, add the bias, apply the sign and the ReLU.

        The engine's layer and a program step both compute with this function.

        Args:
            consts (dict): From :meth:`constants`.
            x (Tensor): Integer input values (unit: the previous layer's output unit).
            level (int): Pyramid level (selects the per-level constants).
            arith (str): ``'int'`` (the engine) or ``'float'`` (the simulation).
            name (str): The layer's name, for errors.

        Returns:
            Tensor: Integer outputs in ``out_unit[level]``.
        """
        if not 0 <= level < consts['num_levels']:
            raise IndexError(f'{name}: level {level} is out of range for '
                             f'{consts["num_levels"]} levels')
        if 'in_m0' in consts:
            x = ops.requantize(x, consts['in_m0'][level], consts['in_shift'][level],
                               *consts['in_range'], arith)
        bias = consts['bias'][level] if 'bias' in consts else None
        out = ops.conv2d(x, consts['weight'], bias, consts['stride'], consts['padding'],
                         consts['dilation'], consts['groups'], arith)
        if 'sign' in consts:
            out = out * ops.as_arith(consts['sign'][level], arith).view(1, -1, 1, 1)
        return ops.relu(out) if consts['relu'] else out

    def forward(self, x: torch.Tensor, level: int = 0, arith: str = 'int') -> torch.Tensor:
        """:meth:`compute` with this layer's constants.

        Args:
            x (Tensor): Integer input values (unit: the previous layer's output unit).
            level (int): Pyramid level (selects the per-level constants). Defaults to 0.
            arith (str): ``'int'`` (the engine) or ``'float'`` (the simulation).

        Returns:
            Tensor: Integer outputs in ``out_unit[level]``.
        """
        return self.compute(self.constants(), x, level, arith, self.name)

    def step(self, args: Dict[str, Any]) -> Dict[str, Any]:
        """The parameters of a call's program step (see :data:`OPS`): layer and level."""
        return {'layer': self.name, 'level': int(args['level'])}

    @staticmethod
    def run(step: Dict[str, Any], constants: Dict[str, Dict[str, Any]], read: Reader,
            arith: str) -> torch.Tensor:
        """Execute a program step of this op (see :data:`OPS`)."""
        return IntConv.compute(constants[step['layer']], read(step['inputs'][0]),
                               step['level'], arith, step['layer'])

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

    op = 'add'
    inputs = ('x', 'y')

    def constants(self) -> Dict[str, Any]:
        """The layer's constants as a program stores them (tensors not copied).

        Returns:
            dict: ``op='add'``, int64 ``mantissa_x``, ``mantissa_y``, ``frac_bits``,
            ``relu`` (0/1) and float64 ``(C,)`` ``out_unit``.
        """
        return {'op': self.op, 'mantissa_x': self.mantissa_x, 'mantissa_y': self.mantissa_y,
                'frac_bits': int(self.frac_bits), 'relu': int(self.relu),
                'out_unit': self.out_unit}

    @staticmethod
    def compute(consts: Dict[str, Any], x: torch.Tensor, y: torch.Tensor,
                arith: str) -> torch.Tensor:
        """``relu?(round(x * Mx) + round(y * My))`` in ``out_unit`` (engine and program)."""
        out = (ops.rescale_fixed(x, consts['mantissa_x'], consts['frac_bits'], arith) +
               ops.rescale_fixed(y, consts['mantissa_y'], consts['frac_bits'], arith))
        return ops.relu(out) if consts['relu'] else out

    def forward(self, x: torch.Tensor, y: torch.Tensor, arith: str = 'int') -> torch.Tensor:
        """:meth:`compute` with this layer's constants."""
        return self.compute(self.constants(), x, y, arith)

    def step(self, args: Dict[str, Any]) -> Dict[str, Any]:
        """The parameters of a call's program step (see :data:`OPS`): the layer."""
        return {'layer': self.name}

    @staticmethod
    def run(step: Dict[str, Any], constants: Dict[str, Dict[str, Any]], read: Reader,
            arith: str) -> torch.Tensor:
        """Execute a program step of this op (see :data:`OPS`)."""
        x, y = (read(tid) for tid in step['inputs'])
        return IntAdd.compute(constants[step['layer']], x, y, arith)

    def extra_repr(self) -> str:
        return f'{self.name!r}, frac_bits={self.frac_bits}, relu={self.relu}'


class IntMaxPool(nn.Module):
    """Max pooling on integers (exact in both arithmetics).

    Args:
        kernel_size, stride, padding: The pooling geometry.
    """

    op = 'max_pool'
    inputs = ('x', )

    def __init__(self, kernel_size, stride, padding) -> None:
        super().__init__()
        self.kernel_size = plain_geometry(kernel_size)
        self.stride = plain_geometry(stride)
        self.padding = plain_geometry(padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.max_pool2d(x, self.kernel_size, self.stride, self.padding)

    def step(self, args: Dict[str, Any]) -> Dict[str, Any]:
        """The parameters of a call's program step (see :data:`OPS`): the geometry."""
        return {'kernel_size': self.kernel_size, 'stride': self.stride, 'padding': self.padding}

    @staticmethod
    def run(step: Dict[str, Any], constants: Dict[str, Dict[str, Any]], read: Reader,
            arith: str) -> torch.Tensor:
        """Execute a program step of this op (see :data:`OPS`)."""
        return ops.max_pool2d(read(step['inputs'][0]), step['kernel_size'], step['stride'],
                              step['padding'])

    def extra_repr(self) -> str:
        return f'kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}'


class IntUpsample(nn.Module):
    """Nearest upsampling of ``x`` to the height and width of ``like``.

    Taking the size from a tensor (FPN: the lateral the result is added to) keeps a
    recorded program valid for any input size.
    """

    op = 'upsample'
    inputs = ('x', )

    def forward(self, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return ops.upsample_nearest(x, like.shape[-2:])

    def step(self, args: Dict[str, Any]) -> Dict[str, Any]:
        """The parameters of a call's program step: ``size_of``, the tensor ``like``."""
        return {'size_of': args['like']}

    @staticmethod
    def run(step: Dict[str, Any], constants: Dict[str, Dict[str, Any]], read: Reader,
            arith: str) -> torch.Tensor:
        """Execute a program step of this op (see :data:`OPS`)."""
        return ops.upsample_nearest(read(step['inputs'][0]), read(step['size_of']).shape[-2:])


class IntReLU(nn.Module):
    """ReLU on integers, where it is a step of its own (FPN before its extra convs)."""

    op = 'relu'
    inputs = ('x', )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.relu(x)

    def step(self, args: Dict[str, Any]) -> Dict[str, Any]:
        """The parameters of a call's program step: none besides the input."""
        return {}

    @staticmethod
    def run(step: Dict[str, Any], constants: Dict[str, Dict[str, Any]], read: Reader,
            arith: str) -> torch.Tensor:
        """Execute a program step of this op (see :data:`OPS`)."""
        return ops.relu(read(step['inputs'][0]))


#: The integer op set, by program op name. Each class is a module of the engine; a
#: call is recorded as a step with the ids of its ``inputs`` and the parameters from
#: ``step`` (tensor values become ids), and ``run`` executes such a step. The ONNX
#: writer has one handler per name.
OPS = {cls.op: cls for cls in (IntConv, IntAdd, IntMaxPool, IntUpsample, IntReLU)}
