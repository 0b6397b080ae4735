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


#: ``|x|`` below ``2^FLOAT_MAX_INPUT_BITS`` is requantized exactly (as by the integer engine).
FLOAT_MAX_INPUT_BITS = 46


def _float_multiply_shift(v: torch.Tensor, m0: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``floor(v * m0 / 2^shift + 1/2)`` exactly in float64.

    For ``|v| < 2^46``, ``0 <= m0 < 2^31`` and ``16 <= shift <= 52``, the limits of
    the integer engine's split product. ``v * m0`` can reach 2^77, so both factors
    are split, ``v = vh * 2^23 + vl`` (``0 <= vl < 2^23``) and ``m0 = hi * 2^16 + lo``,
    into four exact partial products ``t * 2^e``. Each is divided by ``2^shift``
    into a whole part and a remainder below ``2^shift`` (both exact, as scaling by
    a power of two and taking a fraction are); the remainders and the rounding
    half are added with carries, so no sum leaves float64's exact range.

    Raises:
        ValueError: If a shift is outside ``16..52``.
        OverflowError: If ``|v|`` reaches 2^46, or the result could reach 2^52.
    """
    if (shift < FLOAT_MIN_SHIFT).any() or (shift > FLOAT_MAX_SHIFT).any():
        raise ValueError(f'float simulation supports shifts {FLOAT_MIN_SHIFT}..'
                         f'{FLOAT_MAX_SHIFT}, got {shift.unique().tolist()}')
    if not v.numel():
        return v.clone()
    max_v = float(v.abs().max())
    if max_v >= 2**FLOAT_MAX_INPUT_BITS:
        raise OverflowError(f'requantize: max |x| = {max_v:.0f} reaches '
                            f'2^{FLOAT_MAX_INPUT_BITS}; the float simulation would not be exact')
    max_m0, min_shift = int(m0.max()), int(shift.min())
    if int(m0.min()) < 0 or max_m0 >= 2**31:
        raise ValueError(f'float simulation needs mantissas in [0, 2^31), got {int(m0.min())}..'
                         f'{max_m0}')
    if int(max_v) * max_m0 >= 2**(52 + min_shift):
        raise OverflowError(f'requantize: max |x| = {max_v:.0f} times max m0 = {max_m0} over '
                            f'2^{min_shift} could reach 2^52; the float simulation would not '
                            f'be exact')
    m0 = m0.to(torch.float64)
    pow_s = torch.pow(2.0, shift.to(torch.float64))
    hi = torch.floor(m0 / 2**16)
    lo = m0 - hi * 2**16
    vh = torch.floor(v / 2**23)
    vl = v - vh * 2**23
    shape = torch.broadcast_shapes(v.shape, pow_s.shape)
    whole = torch.zeros(shape, dtype=torch.float64, device=v.device)
    rest = torch.zeros_like(whole)
    for t, e in ((vh * hi, 39), (vh * lo, 23), (vl * hi, 16), (vl * lo, 0), (pow_s / 2, 0)):
        y = t * 2.0**e / pow_s
        q = torch.floor(y)
        rest = rest + (y - q) * pow_s
        carry = torch.floor(rest / pow_s)
        whole = whole + q + carry
        rest = rest - carry * pow_s
    return whole


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
