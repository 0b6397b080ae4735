"""Turn fake-quant layers into :mod:`~mmaqd.integer.layers` with integer constants.

Conversion reads the trained model and never changes it. What the fake-quant
layers need to compute as the engine does (integer-aware QAT) is collected in
an :class:`EngineLinks` passed to the converters.
"""
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmaqd.quant import MinMaxQuantizer, QAdd, QConv, Quantizer, add_alignment, fold_batch_norm

from .layers import IntAdd, IntConv
from .ops import FLOAT_MAX_SHIFT, FLOAT_MIN_SHIFT
from .requant import INT32_MAX, accumulator_bound, check_accumulator_fits, quantize_multiplier

#: Value range of the integer image (``pixel - integer mean``, std 1): 9-bit signed.
IMAGE_BITS = 9


class ConversionError(ValueError):
    """A model (or one of its layers) has no integer form; the message says why."""


@dataclass
class EngineLinks:
    """The engine's units and requantizations, by the fake-quant module they belong to.

    Attributes:
        bn_units (list): ``(bn, level, S, b)``: the accumulator unit of the conv before
            each folded BN (per level) and that conv's float bias (None without one),
            which the fold adds to the BN's integer bias.
        add_units (list): ``(qadd, unit_x, unit_y)``: the units of each add's operands.
        requants (list): ``(quantizer, unit, m0, shift)``: each input quantizer's
            requantization from the producer's integers in ``unit``.
    """
    bn_units: List[Tuple[nn.Module, int, torch.Tensor, Optional[torch.Tensor]]] = field(
        default_factory=list)
    add_units: List[Tuple[QAdd, torch.Tensor, torch.Tensor]] = field(default_factory=list)
    requants: List[Tuple[Quantizer, torch.Tensor, torch.Tensor, torch.Tensor]] = field(
        default_factory=list)


def fold_bn(bn: _BatchNorm, acc_unit: torch.Tensor,
            conv_bias: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                         torch.Tensor]:
    """Fold an inference-mode BN (after a conv with accumulator unit ``S``) into integers.

    ``BN(S * acc + c) = g' * S * (acc + B)`` with ``g' = gamma / sqrt(var + eps)`` and
    ``B = round((beta / g' - mu + c) / S)`` (docs/integer_arithmetic.md §2). The sign of ``g'`` is
    applied to the integers so that the output unit ``|g'| * S`` is positive.

    A channel with ``gamma = 0`` outputs the constant ``beta`` whatever its input
    (mmdet's ResNet starts the last BN of every block so). It is returned as
    constant: its sign is +1, its unit ``S`` and ``B = round(beta / S)``, and the
    caller must zero its weights so that the accumulator adds nothing.

    The fold itself is :func:`~mmaqd.quant.fold_batch_norm`, which
    :meth:`QBN.fold <mmaqd.quant.QBN.fold>` uses too (integer-aware QAT rounds the
    same shift, :func:`~mmaqd.quant.bn_fold.folded_shift`).

    Args:
        bn (_BatchNorm): The BN, with running statistics.
        acc_unit (Tensor): ``S``, shape (1,) or (C,).
        conv_bias (Tensor, optional): The conv's float bias ``c``.

    Returns:
        tuple[Tensor, Tensor, Tensor, Tensor]: int64 bias ``B``, int64 sign, float64
        output unit, and the bool mask of the constant (``gamma = 0``) channels.
    """
    try:
        folded = fold_batch_norm(bn, acc_unit, conv_bias)
    except ValueError as err:
        raise ConversionError(str(err)) from err
    unit = folded.unit.expand_as(folded.multiplier)
    ones = torch.ones_like(folded.multiplier)
    sign = torch.where(folded.constant, ones, torch.sign(folded.multiplier))
    out_unit = torch.where(folded.constant, unit, folded.multiplier.abs() * unit)
    return folded.bias, sign.to(torch.int64), out_unit, folded.constant


def _check_quantized(name: str, conv: QConv, has_input: bool) -> None:
    quantizers = [conv.weight_quantizer] + (list(conv.input_quantizers) if has_input else [])
    for q in quantizers:
        if not q.enabled:
            raise ConversionError(f'{name}: {q.name} is at {q.bits} bits; integer conversion '
                                  f'needs every conv quantized (check quant_cfg scope)')
        if isinstance(q, MinMaxQuantizer):
            raise ConversionError(f'{name}: {q.name} is a min-max quantizer with a zero point; '
                                  f'the integer engine supports zero-point-free quantizers '
                                  f'(LSQ, Clip)')
        initialized = getattr(q, 'initialized', None)  # LSQ's flag; others have none
        if initialized is not None and not bool(initialized):
            raise ConversionError(f'{name}: {q.name} was never initialised (no scale yet); '
                                  f'calibrate or load a trained checkpoint first')


def convert_conv(name: str, conv: QConv, in_units: Optional[Sequence[torch.Tensor]],
                 norms: Optional[Sequence[Optional[_BatchNorm]]] = None, relu: bool = False,
                 out_scale: Optional[Sequence[float]] = None,
                 links: Optional[EngineLinks] = None) -> IntConv:
    """Integer form of a QConv, the BN after it (per level) and an optional ReLU.

    Args:
        name (str): Module name of the conv, for messages.
        conv (QConv): The conv.
        in_units (list[Tensor], optional): Per level, the real unit ``(C_in,)`` or
            ``(1,)`` of the integers fed to the conv; None if the conv reads the
            integer image (it must then have no input quantizer).
        norms (list[_BatchNorm | None], optional): Per level, the BN to fold.
        relu (bool): A ReLU follows.
        out_scale (list[float], optional): Per level, a real factor applied to the
            output (FCOS's per-level Scale); folded into the output unit.
        links (EngineLinks, optional): Collects the layer's units and requantizations.

    Returns:
        IntConv: The integer layer.

    Raises:
        ConversionError: For an unquantized or uncalibrated layer, a layer whose
            accumulator could overflow int32, or an unsupported input.
    """
    if not isinstance(conv, QConv):
        raise ConversionError(f'{name}: {type(conv).__name__} is not a QConv; every conv '
                              f'must be quantized for integer inference')
    has_input = in_units is not None
    if has_input == (conv.input_quantizer is None):
        raise ConversionError(f'{name}: the conv {"has no" if has_input else "has an"} input '
                              f'quantizer but its input is '
                              f'{"not " if has_input else ""}the integer image')
    _check_quantized(name, conv, has_input)
    num_levels = len(in_units) if has_input else 1
    if has_input and conv.num_levels not in (1, num_levels):
        raise ConversionError(f'{name}: conv has {conv.num_levels} input quantizers for '
                              f'{num_levels} levels')
    norms = list(norms) if norms is not None else [None] * num_levels
    out_scale = list(out_scale) if out_scale is not None else [1.0] * num_levels
    weight = conv.weight_quantizer.integer_codes(conv.weight.detach()).to(torch.int64)
    s_w = conv.weight_quantizer.get_scale().double()
    in_m0, in_shift, biases, signs, units, constants = [], [], [], [], [], []
    for level in range(num_levels):
        if has_input:
            quantizer = conv.input_quantizers[level if conv.num_levels > 1 else 0]
            s_x = quantizer.get_scale().double()
            if in_units[level].numel() not in (1, conv.in_channels):
                raise ConversionError(f'{name}: input unit of level {level} has '
                                      f'{in_units[level].numel()} channels, the conv takes '
                                      f'{conv.in_channels}')
            ratio = in_units[level].double().reshape(-1) / s_x
            if ratio.numel() == 1:
                ratio = ratio.expand(conv.in_channels)
            try:
                m0, shift = quantize_multiplier(ratio.contiguous(), max_shift=FLOAT_MAX_SHIFT)
            except ValueError as err:  # e.g. a unit vanishing next to the input step
                raise ConversionError(f'{name}: input requantization of level {level}: '
                                      f'{err}') from err
            if (shift < FLOAT_MIN_SHIFT).any():
                raise ConversionError(f'{name}: requantization multiplier up to '
                                      f'{float(ratio.max()):.4g} (input unit / input step) is '
                                      f'too large for the engine (shift < {FLOAT_MIN_SHIFT})')
            in_m0.append(m0)
            in_shift.append(shift)
            if links is not None:
                links.requants.append((quantizer, in_units[level].double().reshape(-1), m0,
                                       shift))
            acc_unit = s_x * s_w
        else:
            acc_unit = s_w
        if norms[level] is not None:
            try:
                bias, sign, unit, constant = fold_bn(norms[level], acc_unit, conv.bias)
            except ConversionError as err:
                raise ConversionError(f'{name} (level {level}): {err}') from err
            constants.append(constant)
            if links is not None:
                links.bn_units.append((norms[level], level, acc_unit,
                                       None if conv.bias is None else conv.bias.detach()))
        else:
            bias = None if conv.bias is None else torch.round(
                conv.bias.detach().double() / acc_unit.expand(conv.out_channels)).to(torch.int64)
            sign, unit = None, acc_unit.expand(conv.out_channels).clone()
        biases.append(bias)
        signs.append(sign)
        units.append(unit * out_scale[level])
    weight = _zero_constant_channels(name, weight, constants)
    in_range = conv.input_quantizer.code_range if has_input else (0, 0)
    in_bits, in_signed = ((conv.input_quantizer.bits, conv.input_quantizer.signed) if has_input
                          else (IMAGE_BITS, True))
    bias_bound = max([int(b.abs().max()) for b in biases if b is not None] + [0])
    kernel_elems = weight[0].numel()
    w_bits = conv.weight_quantizer.bits
    if conv.quantizer == 'Clip':  # odd codes -n..n: one more bit of magnitude
        w_bits += 1
    try:
        check_accumulator_fits(name, in_bits, in_signed, w_bits, kernel_elems, bias_bound,
                               INT32_MAX)
    except ValueError as err:
        products = accumulator_bound(in_bits, in_signed, w_bits, kernel_elems)
        hint = _large_bias_hint(biases, norms) if bias_bound > products else ''
        raise ConversionError(f'{err}{hint}') from err
    if any(s is not None for s in signs) and any(s is None for s in signs):
        signs = [s if s is not None else torch.ones(conv.out_channels, dtype=torch.int64)
                 for s in signs]
    if any(b is not None for b in biases) and any(b is None for b in biases):
        biases = [b if b is not None else torch.zeros(conv.out_channels, dtype=torch.int64)
                  for b in biases]
    return IntConv(name, weight, conv.stride, conv.padding, conv.dilation, conv.groups,
                   in_m0 if has_input else None, in_shift if has_input else None, in_range,
                   biases, signs, relu, units, w_bits=conv.weight_quantizer.bits)


def _large_bias_hint(biases: Sequence[Optional[torch.Tensor]],
                     norms: Sequence[Optional[_BatchNorm]]) -> str:
    """Name the BN channel behind the largest folded bias, for an overflow message.

    The folded bias is ``(beta / g' - mean + c) / S`` (:func:`fold_bn`), so a BN
    whose gamma has barely left 0 (mmdet's ResNet starts the last BN of each block
    at 0) makes it huge. Returns '' when no BN was folded.
    """
    largest = [(int(b.abs().max()), level, int(b.abs().argmax()))
               for level, b in enumerate(biases) if b is not None and norms[level] is not None]
    if not largest:
        return ''
    _, level, channel = max(largest)
    bn = norms[level]
    gamma = float(bn.weight.detach()[channel]) if bn.affine else 1.0
    beta = float(bn.bias.detach()[channel]) if bn.affine else 0.0
    return (f'; the largest |bias| comes from channel {channel} of the BN at level {level} '
            f'(gamma {gamma:.3g}, beta {beta:.3g}): the folded bias grows as beta / gamma, '
            f'so a gamma near 0 makes it large')


def _zero_constant_channels(name: str, weight: torch.Tensor,
                            constants: Sequence[torch.Tensor]) -> torch.Tensor:
    """Zero the weights of channels whose BN has ``gamma = 0`` (see :func:`fold_bn`)."""
    if not constants or not any(bool(c.any()) for c in constants):
        return weight
    everywhere = torch.stack(list(constants)).all(0)
    for level, constant in enumerate(constants):
        partial = torch.nonzero(constant & ~everywhere).flatten().tolist()
        if partial:
            raise ConversionError(
                f'{name}: BN channel(s) {partial} have gamma = 0 at level {level} but not at '
                f'every level; the conv weights shared by the levels cannot be zeroed for '
                f'one level only')
    weight = weight.clone()
    weight[everywhere] = 0
    return weight


def convert_add(name: str, qadd: nn.Module, unit_x: torch.Tensor, unit_y: torch.Tensor,
                relu: bool, links: Optional[EngineLinks] = None) -> IntAdd:
    """Integer form of a QAdd whose operands have the given units.

    Args:
        name (str): Module name of the QAdd.
        qadd (QAdd): The add.
        unit_x (Tensor): ``(C,)`` unit of the first operand.
        unit_y (Tensor): ``(C,)`` unit of the second operand.
        relu (bool): A ReLU follows the add.
        links (EngineLinks, optional): Collects the operands' units for the QAdd.

    Returns:
        IntAdd: The integer add.
    """
    if not isinstance(qadd, QAdd):
        raise ConversionError(f'{name}: {type(qadd).__name__} is not a QAdd')
    channels = max(unit_x.numel(), unit_y.numel())
    unit_x = unit_x.double().reshape(-1).expand(channels).clone()
    unit_y = unit_y.double().reshape(-1).expand(channels).clone()
    if links is not None:
        links.add_units.append((qadd, unit_x, unit_y))
    align = add_alignment(unit_x, unit_y, qadd.frac_bits)
    return IntAdd(name, align.mantissa_x, align.mantissa_y, align.frac_bits, relu,
                  align.output_unit.double())


__all__: List[str] = ['ConversionError', 'EngineLinks', 'fold_bn', 'convert_conv', 'convert_add',
                      'IMAGE_BITS']
