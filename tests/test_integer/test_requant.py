"""Fixed-point requantization checked against exact rational arithmetic."""
import itertools
import math
import random
import re
from fractions import Fraction

import pytest
import torch

from mmaqd.integer import (INT32_MAX, MAX_SHIFT, accumulator_bound, check_accumulator_fits,
                           multiply_by_quantized_multiplier, quantize_multiplier, requantize,
                           rounding_right_shift)

INT64_MIN, INT64_MAX = -2**63, 2**63 - 1


def round_half_up(value: Fraction) -> int:
    return math.floor(value + Fraction(1, 2))


def expected_requant(acc: int, m0: int, shift: int, qmin: int, qmax: int) -> int:
    return min(max(round_half_up(Fraction(acc * m0, 2**shift)), qmin), qmax)


def random_multipliers(n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    log10 = torch.empty(n, dtype=torch.float64).uniform_(-9, 3, generator=gen)
    return 10**log10


def test_quantize_multiplier_random_exact():
    m = random_multipliers(5000, 0)
    m0, shift = quantize_multiplier(m)
    assert m0.dtype == shift.dtype == torch.int64
    assert m0.shape == shift.shape == m.shape
    for value, mant, sh in zip(m.tolist(), m0.tolist(), shift.tolist()):
        assert 2**30 <= mant < 2**31
        assert 0 <= sh <= MAX_SHIFT
        error = abs(Fraction(mant, 2**sh) - Fraction(value))
        assert error <= Fraction(1, 2**(sh + 1)), (value, mant, sh)
    # 1e-9 .. 1e3 spans shifts of about 21 .. 60.
    assert int(shift.min()) <= 22 and int(shift.max()) >= 59


@pytest.mark.parametrize('m, expected', [
    (1.0, (2**30, 30)),
    (0.5, (2**30, 31)),
    (0.75, (3 * 2**29, 31)),
    (2.0**-32, (2**30, 62)),
    (2.0**31 - 1, (2**31 - 1, 0)),
    # m * 2^30 = 2^30 + 1/2 is a tie: round half up.
    (1 + 2.0**-31, (2**30 + 1, 30)),
    # f * 2^31 = 2^31 - 1/4 rounds to 2^31: the carry halves m0 and decrements the shift.
    (1 - 2.0**-33, (2**30, 30)),
    # Just below 2^-32, rounding carries it back into range.
    (2.0**-32 * (1 - 2.0**-40), (2**30, 62)),
])
def test_quantize_multiplier_hand_values(m, expected):
    m0, shift = quantize_multiplier(torch.tensor(m, dtype=torch.float64))
    assert (int(m0), int(shift)) == expected


def test_quantize_multiplier_keeps_shape_and_accepts_float32():
    m = torch.tensor([[0.25, 3.0, 1e-3], [7.5, 0.1, 100.0]])
    m0, shift = quantize_multiplier(m)
    assert m0.shape == shift.shape == (2, 3)
    assert torch.equal(m0[0, :2], torch.tensor([2**30, 3 * 2**29]))
    assert torch.equal(shift[0, :2], torch.tensor([32, 29]))
    m0_64, shift_64 = quantize_multiplier(m.double())
    assert torch.equal(m0, m0_64) and torch.equal(shift, shift_64)


@pytest.mark.parametrize('bad, shown', [
    (0.0, '0.0'), (-1.5, '-1.5'), (float('nan'), 'nan'), (float('inf'), 'inf'),
    (float('-inf'), '-inf')
])
def test_quantize_multiplier_rejects_bad_values(bad, shown):
    m = torch.tensor([0.5, bad, 2.0], dtype=torch.float64)
    with pytest.raises(ValueError, match=r'finite and > 0') as err:
        quantize_multiplier(m)
    assert f'[{shown}]' in str(err.value)


@pytest.mark.parametrize('m, shift', [
    (2.0**31, -1), (2.0**40, -10),
    # Rounds up to 2^31 at shift 0, and the carry needs shift -1.
    (2.0**31 - 2.0**-22, -1),
])
def test_quantize_multiplier_rejects_too_large(m, shift):
    with pytest.raises(ValueError) as err:
        quantize_multiplier(torch.tensor([1.0, m], dtype=torch.float64))
    message = str(err.value)
    assert f'multipliers [{m!r}]' in message
    assert f'need shifts [{shift}] below 0' in message


@pytest.mark.parametrize('m, max_shift, expected', [
    # Would need shift 63 / 70: kept at 62 with a short mantissa.
    (2.0**-33, 62, (2**29, 62)),
    (1e-12, 62, (4611686, 62)),  # 1e-12 * 2^62 = 4611686.018...
    # Would need shift 63 at max_shift 52 (a unit 1.8e-10 of the input step).
    (1.8e-10, 52, (810648, 52)),  # 1.8e-10 * 2^52 = 810647.93...
    # The smallest representable: m * 2^max_shift = 1/2 rounds half up to 1.
    (2.0**-63, 62, (1, 62)),
    (2.0**-53, 52, (1, 52)),
])
def test_quantize_multiplier_caps_small_ones_at_max_shift(m, max_shift, expected):
    m0, shift = quantize_multiplier(torch.tensor([1.0, m], dtype=torch.float64), max_shift)
    assert (int(m0[1]), int(shift[1])) == expected
    assert (int(m0[0]), int(shift[0])) == (2**30, 30)
    error = abs(Fraction(expected[0], 2**expected[1]) - Fraction(m))
    assert error <= Fraction(1, 2**(max_shift + 1))


@pytest.mark.parametrize('m, max_shift', [
    (2.0**-64, 62), (2.0**-63 * 0.99, 62), (2.0**-54, 52), (1e-30, 52),
    # m * 2^52 = 1/2 - 2^-54, where float64's v + 1/2 would round up to 1.
    (2.0**-53 - 2.0**-106, 52),
])
def test_quantize_multiplier_rejects_what_rounds_to_zero(m, max_shift):
    with pytest.raises(ValueError) as err:
        quantize_multiplier(torch.tensor([1.0, m], dtype=torch.float64), max_shift)
    assert f'multipliers [{m!r}] round to 0 at the largest shift {max_shift}' in str(err.value)


@pytest.mark.parametrize('x, shift, expected', [
    (5, 1, 3), (-5, 1, -2), (3, 1, 2), (-3, 1, -1), (1, 1, 1), (-1, 1, 0),
    (7, 0, 7), (-7, 0, -7), (6, 2, 2), (-6, 2, -1), (-7, 2, -2), (-10, 2, -2), (10, 2, 3),
    (2**62, 62, 1), (-2**62, 62, -1), (INT64_MAX, 62, 2), (INT64_MIN, 62, -2),
    (INT64_MIN, 1, -2**62), (INT64_MAX, 1, 2**62),
])
def test_rounding_right_shift_hand_values(x, shift, expected):
    out = rounding_right_shift(torch.tensor([x]), torch.tensor(shift))
    assert out.dtype == torch.int64
    assert out.item() == expected


def test_rounding_right_shift_ties_go_up():
    rng = random.Random(1)
    xs, shifts, expected = [], [], []
    for _ in range(2000):
        shift = rng.randint(1, 40)
        k = rng.randint(-2**20, 2**20)
        # x / 2^shift = k + 1/2 exactly.
        xs.append((2 * k + 1) * 2**(shift - 1))
        shifts.append(shift)
        expected.append(k + 1)
    out = rounding_right_shift(torch.tensor(xs), torch.tensor(shifts))
    assert out.tolist() == expected
    assert any(k < 0 for k in expected) and any(k > 1 for k in expected)


def test_rounding_right_shift_random_vs_fraction():
    rng = random.Random(2)
    xs = [rng.randint(INT64_MIN, INT64_MAX) for _ in range(3000)]
    xs += [rng.randint(-2**40, 2**40) for _ in range(3000)]
    xs += [INT64_MIN, INT64_MAX, 0, -1, 1]
    shifts = [rng.randint(0, 40) for _ in xs]
    out = rounding_right_shift(torch.tensor(xs), torch.tensor(shifts))
    expected = [round_half_up(Fraction(x, 2**s)) for x, s in zip(xs, shifts)]
    assert out.tolist() == expected


def test_rounding_right_shift_zero_is_identity():
    x = torch.tensor([INT64_MIN, -3, -1, 0, 1, 2, INT64_MAX])
    assert torch.equal(rounding_right_shift(x, torch.tensor(0)), x)
    assert torch.equal(rounding_right_shift(x, 0), x)


def test_rounding_right_shift_broadcasts_shift():
    x = torch.tensor([[-6, 6, 10], [-5, 5, 9]])
    shift = torch.tensor([0, 1, 2])
    expected = [[round_half_up(Fraction(v, 2**s)) for v, s in zip(row, shift.tolist())]
                for row in x.tolist()]
    assert rounding_right_shift(x, shift).tolist() == expected == [[-6, 3, 3], [-5, 3, 2]]
    column = rounding_right_shift(x, torch.tensor([[1], [2]]))
    assert column.tolist() == [[-3, 3, 5], [-1, 1, 2]]


def test_rounding_right_shift_int32_input():
    out = rounding_right_shift(torch.tensor([-5, 5], dtype=torch.int32), torch.tensor(1))
    assert out.dtype == torch.int64 and out.tolist() == [-2, 3]


@pytest.mark.parametrize('shift', [-1, 63, 64])
def test_rounding_right_shift_rejects_bad_shift(shift):
    with pytest.raises(ValueError, match=re.escape(f'got min {shift} and max {shift}')):
        rounding_right_shift(torch.tensor([4]), torch.tensor([shift]))


def test_rounding_right_shift_rejects_float():
    with pytest.raises(TypeError, match='x must be an integer tensor'):
        rounding_right_shift(torch.tensor([4.0]), torch.tensor(1))
    with pytest.raises(TypeError, match='shift must be an integer tensor'):
        rounding_right_shift(torch.tensor([4]), torch.tensor(1.0))


def test_requantize_random_vs_fraction():
    gen = torch.Generator().manual_seed(3)
    n = 4000
    acc = torch.randint(-2**31, 2**31, (n,), generator=gen, dtype=torch.int64)
    # Multipliers around 2^-27 .. 2^-20 map int32 accumulators onto roughly -64..64.
    m = 2.0**torch.empty(n, dtype=torch.float64).uniform_(-27, -20, generator=gen)
    m0, shift = quantize_multiplier(m)
    qmin, qmax = -8, 15
    out = requantize(acc, m0, shift, qmin, qmax)
    assert out.dtype == torch.int64
    expected = [expected_requant(a, q, s, qmin, qmax)
                for a, q, s in zip(acc.tolist(), m0.tolist(), shift.tolist())]
    assert out.tolist() == expected
    assert (out == qmin).any() and (out == qmax).any()
    assert ((out > qmin) & (out < qmax)).sum() > 100


def test_requantize_per_channel_relu_clamp():
    gen = torch.Generator().manual_seed(4)
    acc = torch.randint(-5000, 5000, (2, 3, 4, 4), generator=gen, dtype=torch.int32)
    m0, shift = quantize_multiplier(torch.tensor([0.001, 0.0037, 0.0123]))
    m0, shift = m0.view(3, 1, 1), shift.view(3, 1, 1)
    out = requantize(acc, m0, shift, 0, 15)
    assert out.shape == acc.shape
    for (b, c, h, w), value in zip(itertools.product(*map(range, acc.shape)), out.flatten()):
        expected = expected_requant(int(acc[b, c, h, w]), int(m0[c]), int(shift[c]), 0, 15)
        assert value.item() == expected
    assert (out == 0).any() and (out == 15).any()


def test_requantize_hand_values():
    # M = 3 * 2^-3 = 0.375: acc * M = 0.375, 1.5, -1.5, 2.625, -2.625, 7.5.
    acc = torch.tensor([1, 4, -4, 7, -7, 20])
    out = requantize(acc, torch.tensor(3), torch.tensor(3), -2, 6)
    assert out.tolist() == [0, 2, -1, 3, -2, 6]


def test_multiply_by_quantized_multiplier_no_clamp():
    x = torch.tensor([2**31 - 1, -2**31])
    m0, shift = quantize_multiplier(torch.tensor([0.75, 0.75]))
    out = multiply_by_quantized_multiplier(x, m0, shift)
    assert out.tolist() == [round_half_up(Fraction(3, 4) * v) for v in x.tolist()]


def test_requantize_overflow_boundary():
    m0 = torch.tensor(2**31 - 1)
    # (2^32 + 2) * (2^31 - 1) = 2^63 - 2 fits; one more in |acc| does not.
    acc = torch.tensor([-(2**32 + 2), 5])
    out = requantize(acc, m0, torch.tensor(40), INT64_MIN, INT64_MAX)
    assert out.tolist() == [expected_requant(a, 2**31 - 1, 40, INT64_MIN, INT64_MAX)
                            for a in acc.tolist()]
    # Beyond 2^63 the product is split (exact for |x| < 2^46 and shifts 16..61) ...
    acc = torch.tensor([2**32 + 3, -(2**45 + 7), 5])
    out = requantize(acc, m0, torch.tensor(40), INT64_MIN, INT64_MAX)
    assert out.tolist() == [expected_requant(a, 2**31 - 1, 40, INT64_MIN, INT64_MAX)
                            for a in acc.tolist()]
    # ... and refused beyond that.
    for bad, shift in ((2**46, 40), (2**32 + 3, 12)):
        with pytest.raises(ValueError, match='overflow int64') as err:
            requantize(torch.tensor([bad, 5]), m0, torch.tensor(shift), 0, 255)
        assert f'max |x| = {bad}' in str(err.value)
        assert f'max |m0| = {2**31 - 1}' in str(err.value)


def test_requantize_overflow_int64_min():
    with pytest.raises(ValueError, match=re.escape(f'max |x| = {2**63}')):
        requantize(torch.tensor([INT64_MIN]), torch.tensor(2), torch.tensor(1), 0, 1)


def test_requantize_rejects_empty_range():
    with pytest.raises(ValueError, match='qmin=5 is greater than qmax=4'):
        requantize(torch.tensor([1]), torch.tensor(2**30), torch.tensor(30), 5, 4)


@pytest.mark.parametrize('in_bits, in_signed, w_bits, kernel_elems, expected', [
    (4, False, 4, 3 * 3 * 256, 15 * 8 * 2304),
    (4, False, 4, 3 * 3 * 256, 276480),
    (2, False, 2, 9, 3 * 2 * 9),
    (3, True, 3, 1, 16),
    (8, False, 8, 3 * 3 * 256, 255 * 128 * 2304),
    # Stem: 8-bit signed codes -128..127, 8-bit weights, 7x7x3 kernel.
    (8, True, 8, 7 * 7 * 3, 128 * 128 * 147),
    # Stem with image minus an integer mean (e.g. -124..151) needs 9 signed bits.
    (9, True, 8, 7 * 7 * 3, 4816896),
])
def test_accumulator_bound_values(in_bits, in_signed, w_bits, kernel_elems, expected):
    assert accumulator_bound(in_bits, in_signed, w_bits, kernel_elems) == expected


@pytest.mark.parametrize('in_bits, in_signed, w_bits, kernel_elems', [
    (2, False, 3, 3), (3, True, 2, 2), (2, True, 2, 3),
])
def test_accumulator_bound_is_attained(in_bits, in_signed, w_bits, kernel_elems):
    in_codes = range(-2**(in_bits - 1), 2**(in_bits - 1)) if in_signed else range(2**in_bits)
    w_codes = range(-2**(w_bits - 1), 2**(w_bits - 1))
    worst = max(
        abs(sum(i * w for i, w in zip(ins, ws)))
        for ins in itertools.product(in_codes, repeat=kernel_elems)
        for ws in itertools.product(w_codes, repeat=kernel_elems))
    assert accumulator_bound(in_bits, in_signed, w_bits, kernel_elems) == worst


@pytest.mark.parametrize('kwargs, what', [
    (dict(in_bits=0), 'in_bits=0'), (dict(in_bits=True), 'in_bits=True'),
    (dict(w_bits=33), 'w_bits=33'), (dict(w_bits=4.0), 'w_bits=4.0'),
    (dict(kernel_elems=0), 'kernel_elems=0'),
])
def test_accumulator_bound_rejects_bad_args(kwargs, what):
    args = dict(in_bits=4, in_signed=False, w_bits=4, kernel_elems=9)
    args.update(kwargs)
    with pytest.raises(ValueError, match=re.escape(f'accumulator_bound: {what} is invalid')):
        accumulator_bound(**args)


def test_check_accumulator_fits_returns_bound():
    assert check_accumulator_fits('backbone.layer1.0.conv1', 4, False, 4, 2304) == 276480
    assert check_accumulator_fits('x', 4, False, 4, 2304, bias_bound=20) == 276500


def test_check_accumulator_fits_boundary():
    # 255 * 128 * 65793 = 2^31 - 1 - 127.
    kernel = 65793
    assert accumulator_bound(8, False, 8, kernel) == INT32_MAX - 127
    assert check_accumulator_fits('head.cls', 8, False, 8, kernel, bias_bound=127) == INT32_MAX
    with pytest.raises(ValueError) as err:
        check_accumulator_fits('head.cls', 8, False, 8, kernel, bias_bound=128)
    assert str(err.value).startswith(
        f'head.cls: accumulator bound {INT32_MAX + 1} exceeds the limit {INT32_MAX}')
    with pytest.raises(ValueError, match=r'^neck\.fpn: accumulator bound 2147516160 exceeds'):
        check_accumulator_fits('neck.fpn', 8, False, 8, kernel + 1)


def test_check_accumulator_fits_custom_limit():
    with pytest.raises(ValueError, match=r'^conv: accumulator bound 54 exceeds the limit 53 '):
        check_accumulator_fits('conv', 2, False, 2, 9, limit=53)
    assert check_accumulator_fits('conv', 2, False, 2, 9, limit=54) == 54


def test_check_accumulator_fits_rejects_negative_bias_bound():
    with pytest.raises(ValueError, match=r'^conv: bias_bound=-1 must be >= 0'):
        check_accumulator_fits('conv', 4, False, 4, 9, bias_bound=-1)
