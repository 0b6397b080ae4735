"""Fixed-point requantization of integer accumulators (docs/integer_arithmetic.md §2).

A positive real multiplier ``M`` is stored as an int32-representable mantissa
``M0`` in ``[2^30, 2^31)`` and a right shift: ``M ~= M0 * 2^-shift`` (the
gemmlowp / TFLite layout); a multiplier too small for that at the largest shift
allowed keeps that shift with a shorter ``M0``. Applying it to an integer ``x``
takes the exact int64 product ``x * M0`` and shifts it right with round-half-up,
so the whole path is integer-only and bit-exact across devices.

Rounding rule, used everywhere here: ``floor(v + 1/2)`` for the exact rational
``v = x * M0 / 2^shift``, i.e. ties go toward +inf (``2.5 -> 3``,
``-2.5 -> -2``). It matches :func:`mmaqd.quant.apply_fixed_point`, which QAT
uses to simulate this path. gemmlowp's ``RoundingDivideByPOT`` rounds ties away
from zero instead; the two differ only on negative ties.
"""
from numbers import Integral
from typing import Tuple

import torch

from ..quant.bits import integer_range

#: Mantissa bits: ``M0`` lies in ``[2^(MANTISSA_BITS-1), 2^MANTISSA_BITS)``, or below at
#: the largest shift (see :func:`quantize_multiplier`).
MANTISSA_BITS = 31

#: Largest right shift accepted; ``2^(MAX_SHIFT-1)`` and ``x >> MAX_SHIFT`` stay in int64.
MAX_SHIFT = 62

#: Largest value of a signed 32-bit accumulator.
INT32_MAX = 2**31 - 1

_INT64_LIMIT = 2**63
_MAX_LISTED = 10


def _list_values(values: torch.Tensor) -> str:
    """Format offending values for an error message, at most ``_MAX_LISTED`` of them."""
    flat = values.reshape(-1).tolist()
    if len(flat) <= _MAX_LISTED:
        return str(flat)
    return f'{flat[:_MAX_LISTED]} ... ({len(flat)} in all)'


def _as_int64(t: torch.Tensor, what: str, owner: str) -> torch.Tensor:
    """Check that ``t`` holds integers (not floats or bools) and return it as int64."""
    if not isinstance(t, torch.Tensor):
        t = torch.as_tensor(t)
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise TypeError(f'{owner}: {what} must be an integer tensor, got {t.dtype}')
    return t.to(torch.int64)


def _check_int_arg(value: object, what: str, owner: str, low: int, high: int) -> int:
    """Check that ``value`` is a plain integer (not a bool) in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, Integral) or not low <= value <= high:
        raise ValueError(f'{owner}: {what}={value!r} is invalid; expected an int in '
                         f'{low}..{high}')
    return int(value)


def quantize_multiplier(m: torch.Tensor,
                        max_shift: int = MAX_SHIFT) -> Tuple[torch.Tensor, torch.Tensor]:
    """Split positive real multipliers into int32 mantissas and right shifts.

    With ``m = f * 2^e``, ``f`` in ``[0.5, 1)`` (frexp), the shift is
    ``31 - e`` and ``m0 = round_half_up(f * 2^31) = round_half_up(m * 2^shift)``,
    so ``|m0 * 2^-shift - m| <= 2^-(shift+1)``. When rounding carries ``m0`` to
    ``2^31``, it is halved and the shift decremented, which keeps the value.
    Scaling float64 by powers of two is exact, and so is ``floor(v + 0.5)`` for
    ``v >= 2^30``: the sum is exact below ``2^31`` and floors to ``2^31`` above.

    A multiplier that would need a shift above ``max_shift`` (a small one) gets
    ``shift = max_shift`` and ``m0 = round_half_up(m * 2^max_shift)`` instead: a
    mantissa with fewer significant bits (``1 <= m0 <= 2^30``), still exact to
    ``2^-(max_shift+1)``. (A BN whose gamma has barely left 0 makes such a
    multiplier for the layer after it.)

    Args:
        m (Tensor): Real multipliers of any shape, all finite and > 0, in
            ``[2^-(max_shift+1), 2^31)``. Computed in float64.
        max_shift (int): Largest shift to use, at most 62. Defaults to 62.

    Returns:
        tuple[Tensor, Tensor]: int64 tensors ``(m0, shift)`` with the shape of
        ``m``: ``m0`` in ``[2^30, 2^31)`` (or smaller at ``max_shift``) and
        ``shift`` in ``[0, max_shift]``.

    Raises:
        ValueError: If any multiplier is <= 0, NaN or infinite, needs a negative
            shift (``m >= 2^31``) or rounds to 0 at ``max_shift``; the offending
            multipliers are listed.
    """
    m = torch.as_tensor(m).detach().to(torch.float64)
    bad = ~(torch.isfinite(m) & (m > 0))
    if bad.any():
        raise ValueError('quantize_multiplier: multipliers must be finite and > 0, got '
                         f'{_list_values(m[bad])}')
    fraction, exponent = torch.frexp(m)
    m0 = torch.floor(fraction * 2.0**MANTISSA_BITS + 0.5).to(torch.int64)
    shift = MANTISSA_BITS - exponent.to(torch.int64)
    carry = m0 == 2**MANTISSA_BITS
    m0 = torch.where(carry, m0 // 2, m0)
    shift = torch.where(carry, shift - 1, shift)
    if not 0 <= max_shift <= MAX_SHIFT:
        raise ValueError(f'quantize_multiplier: max_shift={max_shift} is outside [0, {MAX_SHIFT}]')
    capped = shift > max_shift
    if capped.any():
        # round half up without adding 1/2 in float64 (0.5 - 2^-54 plus 1/2 rounds to 1):
        # v and v - floor(v) are exact below 2^52
        scaled = m * 2.0**max_shift
        whole = torch.floor(scaled)
        small = (whole + (scaled - whole >= 0.5).to(torch.float64)).to(torch.int64)
        if (small[capped] == 0).any():
            raise ValueError(f'quantize_multiplier: multipliers '
                             f'{_list_values(m[capped & (small == 0)])}'
                             f' round to 0 at the largest shift {max_shift}')
        m0 = torch.where(capped, small, m0)
        shift = torch.where(capped, torch.full_like(shift, max_shift), shift)
    out_of_range = shift < 0
    if out_of_range.any():
        raise ValueError(f'quantize_multiplier: multipliers {_list_values(m[out_of_range])} '
                         f'need shifts {_list_values(shift[out_of_range])} below 0; '
                         f'representable multipliers lie in about [2^-{max_shift + 1}, 2^31)')
    return m0, shift


def rounding_right_shift(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``floor(x / 2^shift + 1/2)`` exactly, with integer operations only.

    Round half up: ties go toward +inf, for negative ``x`` too (``-5 >> 1``
    gives ``-2``, since -2.5 rounds to -2). Written as
    ``(x >> shift) + bit(shift-1) of x``: the low ``shift`` bits of a two's
    complement ``x`` are the remainder of the floor division, and it is at least
    half of ``2^shift`` exactly when its top bit is set. Unlike
    ``(x + 2^(shift-1)) >> shift`` this cannot overflow, for any int64 ``x``.

    Args:
        x (Tensor): Integer tensor, computed as int64.
        shift (Tensor | int): Right shifts in ``[0, 62]``, broadcastable to ``x``.
            A shift of 0 leaves ``x`` unchanged.

    Returns:
        Tensor: int64 tensor with the broadcast shape of ``x`` and ``shift``.

    Raises:
        TypeError: If ``x`` or ``shift`` is not an integer tensor.
        ValueError: If a shift lies outside ``[0, 62]``.
    """
    owner = 'rounding_right_shift'
    x = _as_int64(x, 'x', owner)
    shift = _as_int64(shift, 'shift', owner).to(x.device)
    if shift.numel() and (int(shift.min()) < 0 or int(shift.max()) > MAX_SHIFT):
        raise ValueError(f'{owner}: shifts must lie in [0, {MAX_SHIFT}], got min '
                         f'{int(shift.min())} and max {int(shift.max())}')
    half_bit = torch.bitwise_right_shift(x, (shift - 1).clamp(min=0)) & 1
    return torch.bitwise_right_shift(x, shift) + torch.where(shift > 0, half_bit, 0)


def multiply_by_quantized_multiplier(x: torch.Tensor, m0: torch.Tensor,
                                     shift: torch.Tensor) -> torch.Tensor:
    """``floor(x * m0 / 2^shift + 1/2)`` from the exact int64 product ``x * m0``.

    Args:
        x (Tensor): Integer tensor (e.g. an int32 or int64 accumulator).
        m0 (Tensor | int): Mantissas from :func:`quantize_multiplier`,
            broadcastable to ``x``.
        shift (Tensor | int): Right shifts in ``[0, 62]``, broadcastable to ``x``.

    Returns:
        Tensor: int64 tensor with the broadcast shape.

    Raises:
        TypeError: If an argument is not an integer tensor.
        ValueError: If ``max|x| * max|m0|`` reaches 2^63, so that the product
            could overflow int64 (the two maxima are named), or a shift is out
            of range.
    """
    owner = 'multiply_by_quantized_multiplier'
    x = _as_int64(x, 'x', owner)
    m0 = _as_int64(m0, 'm0', owner).to(x.device)
    if x.numel() and m0.numel():
        # Python ints: exact, and abs(-2^63) does not wrap around.
        max_x = max(abs(int(x.min())), abs(int(x.max())))
        max_m0 = max(abs(int(m0.min())), abs(int(m0.max())))
        if max_x * max_m0 >= _INT64_LIMIT:
            shift_t = _as_int64(shift, 'shift', owner)
            if (max_x < 2**_SPLIT_X_BITS and int(m0.min()) >= 0 and max_m0 < 2**31
                    and int(shift_t.min()) >= 16 and int(shift_t.max()) <= 61):
                return _split_multiply_shift(x, m0, shift_t.to(x.device))
            raise ValueError(f'{owner}: max |x| = {max_x} times max |m0| = {max_m0} is '
                             f'{max_x * max_m0} >= 2^63; the product would overflow int64')
    return rounding_right_shift(x * m0, shift)


#: ``|x|`` below ``2^_SPLIT_X_BITS`` can be multiplied by any ``m0 < 2^31`` exactly.
_SPLIT_X_BITS = 46


def _split_multiply_shift(x: torch.Tensor, m0: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``floor((x * m0 + 2^(shift-1)) / 2^shift)`` without forming ``x * m0``.

    With ``m0 = hi * 2^16 + lo`` and ``t = x * hi = q * 2^(shift-16) + r``
    (``0 <= r < 2^(shift-16)``): ``x * m0 / 2^shift = q + (r * 2^16 + x * lo) / 2^shift``.
    Every term stays below 2^63 for ``|x| < 2^46``, ``m0 < 2^31``, ``16 <= shift <= 61``.
    """
    hi, lo = m0 >> 16, m0 & 0xFFFF
    t = x * hi
    k = shift - 16
    q = torch.bitwise_right_shift(t, k)
    r = t - torch.bitwise_left_shift(q, k)
    return q + rounding_right_shift(torch.bitwise_left_shift(r, 16) + x * lo, shift)


def requantize(acc: torch.Tensor, m0: torch.Tensor, shift: torch.Tensor, qmin: int,
               qmax: int) -> torch.Tensor:
    """Rescale an integer accumulator to output codes: ``clamp(round(acc * M), qmin, qmax)``.

    ``M = m0 * 2^-shift`` and the rounding is half up (ties toward +inf), all in
    int64 arithmetic. With ``qmin = 0`` the lower clamp is the fused ReLU.

    Args:
        acc (Tensor): int32 or int64 accumulator (bias already added).
        m0 (Tensor | int): Mantissas from :func:`quantize_multiplier`,
            broadcastable to ``acc`` (e.g. shape (C, 1, 1) per channel).
        shift (Tensor | int): Right shifts in ``[0, 62]``, broadcastable to ``acc``.
        qmin (int): Smallest output code.
        qmax (int): Largest output code.

    Returns:
        Tensor: int64 codes in ``[qmin, qmax]``.

    Raises:
        ValueError: If ``qmin > qmax``, or the product ``acc * m0`` could
            overflow int64 (see :func:`multiply_by_quantized_multiplier`).
    """
    if qmin > qmax:
        raise ValueError(f'requantize: qmin={qmin} is greater than qmax={qmax}')
    return multiply_by_quantized_multiplier(acc, m0, shift).clamp(int(qmin), int(qmax))


def accumulator_bound(in_bits: int, in_signed: bool, w_bits: int, kernel_elems: int) -> int:
    """Worst-case ``|sum(in_code * w_code)|`` over ``kernel_elems`` products.

    Input codes are ``0..2^b-1`` (unsigned) or ``-2^(b-1)..2^(b-1)-1`` (signed);
    weight codes are signed two's-complement. The bound
    ``kernel_elems * max|in| * max|w|`` is attained (every input at its largest
    magnitude, every weight at ``-2^(w_bits-1)``), so it is tight. It does not
    cover odd-grid weights (codes ``-n..n``, ``n = 2^b-1``) of the Clip quantizer.

    Args:
        in_bits (int): Input code bit width, 1..32.
        in_signed (bool): Whether input codes are signed.
        w_bits (int): Weight code bit width, 1..32.
        kernel_elems (int): Products per output, e.g. ``C_in/groups * kh * kw``.

    Returns:
        int: The bound, as a Python int (no overflow).

    Raises:
        ValueError: If a bit width or ``kernel_elems`` is not a positive int.
    """
    owner = 'accumulator_bound'
    in_bits = _check_int_arg(in_bits, 'in_bits', owner, 1, 32)
    w_bits = _check_int_arg(w_bits, 'w_bits', owner, 1, 32)
    kernel_elems = _check_int_arg(kernel_elems, 'kernel_elems', owner, 1, _INT64_LIMIT)
    in_min, in_max = integer_range(in_bits, bool(in_signed))
    w_min, w_max = integer_range(w_bits, True)
    max_in = max(abs(in_min), abs(in_max))
    max_w = max(abs(w_min), abs(w_max))
    return kernel_elems * max_in * max_w


def check_accumulator_fits(name: str, in_bits: int, in_signed: bool, w_bits: int,
                           kernel_elems: int, bias_bound: int = 0,
                           limit: int = INT32_MAX) -> int:
    """Check that a layer's accumulator (products plus bias) cannot exceed ``limit``.

    Args:
        name (str): Layer name, used in the error message.
        in_bits (int): Input code bit width.
        in_signed (bool): Whether input codes are signed.
        w_bits (int): Weight code bit width.
        kernel_elems (int): Products per output.
        bias_bound (int): Largest ``|B|`` of the integer bias added to the
            accumulator. Defaults to 0.
        limit (int): Largest magnitude the accumulator may reach. Defaults to
            ``2^31 - 1`` (int32).

    Returns:
        int: The worst-case ``|acc|``, i.e. :func:`accumulator_bound` plus ``bias_bound``.

    Raises:
        ValueError: If that bound exceeds ``limit`` (layer, bound and limit are
            named), or ``bias_bound`` is negative.
    """
    if bias_bound < 0:
        raise ValueError(f'{name}: bias_bound={bias_bound} must be >= 0')
    bound = accumulator_bound(in_bits, in_signed, w_bits, kernel_elems) + int(bias_bound)
    if bound > limit:
        raise ValueError(
            f'{name}: accumulator bound {bound} exceeds the limit {limit} '
            f'({in_bits}-bit {"signed" if in_signed else "unsigned"} inputs, {w_bits}-bit '
            f'weights, {kernel_elems} products, |bias| <= {bias_bound})')
    return bound
