"""The integer engine's operations, each in two arithmetics that must agree exactly.

``'int'`` computes on int64 tensors with integer operations only: this is the
integer engine. ``'float'`` is the deploy-mode simulation: the same arithmetic
done independently in float64 on integer-valued tensors (float convolution,
float rounding formulas). Every result is an integer below 2^53 in magnitude,
so the simulation is exact and the two must agree on every element; a
difference means an overflow, a dtype slip or a wrong integer kernel.
"""
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from .requant import multiply_by_quantized_multiplier, rounding_right_shift

ARITHMETICS = ('int', 'float')

#: Largest requantization shift the float64 simulation computes exactly; conversion
#: caps shifts here (see :func:`~mmaqd.integer.requant.quantize_multiplier`).
FLOAT_MAX_SHIFT = 52
#: Smallest requantization shift the float64 simulation handles.
FLOAT_MIN_SHIFT = 16


def check_arith(arith: str) -> str:
    """Return ``arith`` if it is ``'int'`` or ``'float'``, else raise naming it."""
    if arith not in ARITHMETICS:
        raise ValueError(f'arith={arith!r} is invalid; expected one of {ARITHMETICS}')
    return arith


def as_arith(x: torch.Tensor, arith: str) -> torch.Tensor:
    """Convert integer-valued ``x`` to the arithmetic's dtype (int64 or float64)."""
    return x.to(torch.int64 if arith == 'int' else torch.float64)


def _channel(t: torch.Tensor, ndim: int) -> torch.Tensor:
    """Shape a per-channel ``(C,)`` tensor to broadcast along dim 1 of an ``ndim`` tensor."""
    return t.view(1, -1, *([1] * (ndim - 2))) if t.numel() > 1 else t.reshape(())


def _float_multiply_shift(v: torch.Tensor, m0: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``floor(v * m0 / 2^shift + 1/2)`` exactly in float64 (``m0 < 2^31``, ``16 <= shift <= 52``).

    ``v * m0`` can exceed 2^53, so ``m0`` is split as ``hi * 2^16 + lo``:
    ``v * m0 / 2^s = a / 2^(s-16) + b / 2^s`` with ``a = v * hi`` and ``b = v * lo``
    (exact). The integer part of ``a / 2^(s-16)`` is split off exactly; the rest is
    small enough for float64 while ``|v| < 2^35``.
    """
    if (shift < FLOAT_MIN_SHIFT).any() or (shift > FLOAT_MAX_SHIFT).any():
        raise ValueError(f'float simulation supports shifts {FLOAT_MIN_SHIFT}..'
                         f'{FLOAT_MAX_SHIFT}, got {shift.unique().tolist()}')
    if v.numel() and v.abs().max() >= 2**35:
        raise OverflowError('requantize: |x| reaches 2^35; the float simulation would not '
                            'be exact')
    m0 = m0.to(torch.float64)
    shift = shift.to(torch.float64)
    hi = torch.floor(m0 / 2**16)
    lo = m0 - hi * 2**16
    a, b = v * hi, v * lo
    pow_k = torch.pow(2.0, shift - 16)
    a_hi = torch.floor(a / pow_k)
    a_lo = a - a_hi * pow_k
    pow_s = torch.pow(2.0, shift)
    return a_hi + torch.floor((a_lo * 2**16 + b + pow_s / 2) / pow_s)


def requantize(x: torch.Tensor, m0: torch.Tensor, shift: torch.Tensor, qmin: int, qmax: int,
               arith: str) -> torch.Tensor:
    """``clamp(round_half_up(x * m0 / 2^shift), qmin, qmax)``; per channel along dim 1.

    Args:
        x (Tensor): Integer values (int64, or float64 holding integers).
        m0 (Tensor): int64 mantissas, ``(C,)`` or ``(1,)``.
        shift (Tensor): int64 right shifts, like ``m0``.
        qmin (int): Smallest code (0 puts a ReLU in the clamp).
        qmax (int): Largest code.
        arith (str): ``'int'`` or ``'float'``.

    Returns:
        Tensor: The codes, in the arithmetic's dtype.
    """
    m0, shift = _channel(m0, x.dim()), _channel(shift, x.dim())
    if arith == 'int':
        out = multiply_by_quantized_multiplier(x, m0, shift)
    else:
        out = _float_multiply_shift(x, m0, shift)
    return out.clamp(qmin, qmax)


def rescale_fixed(x: torch.Tensor, mantissa: torch.Tensor, frac_bits: int,
                  arith: str) -> torch.Tensor:
    """``round_half_up(x * mantissa / 2^frac_bits)`` per channel (QAdd's alignment).

    Args:
        x (Tensor): Integer values.
        mantissa (Tensor): int64 ``(C,)`` or ``(1,)`` mantissas.
        frac_bits (int): Fraction bits of the mantissas.
        arith (str): ``'int'`` or ``'float'``.

    Returns:
        Tensor: The rescaled integers.
    """
    mantissa = _channel(mantissa, x.dim())
    if arith == 'int':
        if x.numel() and int(x.abs().max()) * int(mantissa.abs().max()) >= 2**63:
            raise OverflowError('rescale_fixed: |x * mantissa| reaches 2^63 and would overflow '
                                'int64')
        return rounding_right_shift(x * mantissa, torch.tensor(frac_bits))
    # mantissa = hi * 2^f + lo with 0 <= lo < 2^f, so that
    # floor(x * M / 2^f + 1/2) = x * hi + floor(x * lo / 2^f + 1/2), each part exact.
    mantissa = mantissa.to(torch.float64)
    hi = torch.floor(mantissa / 2**frac_bits)
    lo = mantissa - hi * 2**frac_bits
    whole, part = x * hi, x * lo
    if x.numel() and max(float(whole.abs().max()), float(part.abs().max())) >= 2**52:
        raise OverflowError('rescale_fixed: |x * mantissa| is too large for the exact float '
                            'simulation')
    return whole + torch.floor(part / 2**frac_bits + 0.5)


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
           stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int],
           groups: int, arith: str) -> torch.Tensor:
    """Integer convolution (zero padding), plus an integer per-channel bias.

    Args:
        x (Tensor): Integer input codes.
        weight (Tensor): int64 weight codes.
        bias (Tensor, optional): int64 bias in accumulator units, ``(C_out,)``.
        stride, padding, dilation, groups: As for :func:`torch.nn.functional.conv2d`.
        arith (str): ``'int'`` or ``'float'``.

    Returns:
        Tensor: The accumulators.
    """
    weight = as_arith(weight, arith)
    out = F.conv2d(x, weight, None, stride, padding, dilation, groups)
    if bias is not None:
        out = out + _channel(as_arith(bias, arith), out.dim())
    return out


def relu(x: torch.Tensor) -> torch.Tensor:
    """ReLU on integers: ``max(x, 0)``."""
    return x.clamp(min=0)


def max_pool2d(x: torch.Tensor, kernel_size, stride, padding) -> torch.Tensor:
    """Max pooling (exact on integers in both arithmetics)."""
    return F.max_pool2d(x, kernel_size, stride, padding)


def upsample_nearest(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Nearest upsampling to ``size`` with the source indices torch's 'nearest' uses.

    The indices come from :func:`torch.nn.functional.interpolate` on an index
    grid, so the result equals interpolating ``x`` itself; the data is only
    gathered, never computed on.
    """
    h_in, w_in = x.shape[-2:]
    rows = F.interpolate(torch.arange(h_in, dtype=torch.float32).view(1, 1, h_in, 1),
                         size=(size[0], 1), mode='nearest').view(-1).long()
    cols = F.interpolate(torch.arange(w_in, dtype=torch.float32).view(1, 1, 1, w_in),
                         size=(1, size[1]), mode='nearest').view(-1).long()
    return x.index_select(-2, rows).index_select(-1, cols)
