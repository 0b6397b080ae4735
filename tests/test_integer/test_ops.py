"""The engine's operations: integer and float64 arithmetic both equal exact rational references."""
import math
import random
import re
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F

from mmaqd.integer import ops, quantize_multiplier
from mmaqd.integer.ops import FLOAT_MAX_INPUT_BITS, FLOAT_MAX_SHIFT

FLOAT_MIN_SHIFT = 16


def round_half_up(value: Fraction) -> int:
    return math.floor(value + Fraction(1, 2))


def expected_requant(x: int, m0: int, shift: int, qmin: int, qmax: int) -> int:
    return min(max(round_half_up(Fraction(x * m0, 2**shift)), qmin), qmax)


def both_ariths(fn, x: torch.Tensor, *args):
    """Run ``fn`` on int64 and on float64 ``x``; check the dtypes and that they agree."""
    out_int = fn(x.to(torch.int64), *args, 'int')
    out_float = fn(x.to(torch.float64), *args, 'float')
    assert out_int.dtype == torch.int64 and out_float.dtype == torch.float64
    assert torch.equal(out_int.double(), out_float)
    return out_int


def per_channel_multipliers(channels: int, gen: torch.Generator):
    """Mantissas and shifts spanning the float range, both ends included."""
    log2 = torch.empty(channels - 4, dtype=torch.float64).uniform_(-22, 14.9, generator=gen)
    # 1.3 * 2^14 needs shift 16, 1.3 * 2^-22 shift 52; 2^-30 and 1.8e-10 (which
    # would need shift 63) are capped at shift 52.
    m = torch.cat([torch.tensor([1.3 * 2**14, 1.3 * 2**-22, 2.0**-30, 1.8e-10]), 2**log2])
    return m, *quantize_multiplier(m, max_shift=FLOAT_MAX_SHIFT)


def test_float_max_shift_is_52():
    assert FLOAT_MAX_SHIFT == 52


@pytest.mark.parametrize('seed, qmin, qmax', [(0, 0, 15), (1, -128, 127), (2, -8, 7),
                                              (3, 0, 255), (4, -2, 1)])
def test_requantize_per_channel_random_vs_fraction(seed, qmin, qmax):
    gen = torch.Generator().manual_seed(seed)
    channels = 12
    m, m0, shift = per_channel_multipliers(channels, gen)
    assert int(shift.min()) == FLOAT_MIN_SHIFT and int(shift.max()) == FLOAT_MAX_SHIFT
    assert int(m0[2]) < 2**30 and int(m0[3]) < 2**30  # capped multipliers: short mantissas
    # Real products x * m spread over 1.5 times the code range on both sides.
    span = 1.5 * max(abs(qmin), abs(qmax), 4)
    target = torch.empty(2, channels, 5, 7, dtype=torch.float64).uniform_(-span, span,
                                                                          generator=gen)
    x = torch.round(target / m.view(1, -1, 1, 1)).clamp(-2**31 + 1, 2**31 - 1)
    out = both_ariths(ops.requantize, x, m0, shift, qmin, qmax)
    assert out.shape == x.shape
    x_list, out_list = x.long().tolist(), out.tolist()
    m0_list, shift_list = m0.tolist(), shift.tolist()
    for n in range(2):
        for c in range(channels):
            expected = [[expected_requant(v, m0_list[c], shift_list[c], qmin, qmax) for v in row]
                        for row in x_list[n][c]]
            assert out_list[n][c] == expected, (n, c, m0_list[c], shift_list[c])
    assert (out == qmin).any() and (out == qmax).any()
    assert ((out > qmin) & (out < qmax)).sum() > 100


def test_requantize_one_multiplier_for_all_channels():
    m0, shift = quantize_multiplier(torch.tensor([0.0123]))
    x = torch.arange(-600, 600, dtype=torch.int64).view(4, 3, 10, 10)
    out = both_ariths(ops.requantize, x, m0, shift, -5, 6)
    expected = [expected_requant(v, int(m0), int(shift), -5, 6) for v in x.flatten().tolist()]
    assert out.flatten().tolist() == expected


def test_requantize_hand_values():
    # m0 / 2^31 = 0.375: x * M = 0.375, 1.5, -1.5, 2.625, -2.625, 7.5, -7.5.
    x = torch.tensor([1, 4, -4, 7, -7, 20, -20]).view(1, 1, 1, 7)
    out = both_ariths(ops.requantize, x, torch.tensor([3 * 2**28]), torch.tensor([31]), -2, 6)
    assert out.flatten().tolist() == [0, 2, -1, 3, -2, 6, -2]
    # Per channel: channel 0 keeps M = 0.375, channel 1 has M = 2.5 at shift 16.
    x = torch.tensor([[3, -3, 1, -1], [3, -3, 1, -1]]).view(1, 2, 1, 4)
    out = both_ariths(ops.requantize, x, torch.tensor([3 * 2**28, 5 * 2**15]),
                      torch.tensor([31, 16]), -100, 100)
    assert out.view(2, 4).tolist() == [[1, -1, 0, 0], [8, -7, 3, -2]]


def test_requantize_exact_ties_round_up():
    rng = random.Random(5)
    xs, m0s, shifts, expected = [], [], [], []
    for shift in range(FLOAT_MIN_SHIFT, FLOAT_MAX_SHIFT + 1):
        for _ in range(40):
            # m0 = d * 2^t (d odd) and x = j * 2^(shift-1-t) (j odd): x * m0 / 2^shift = j*d/2.
            t = rng.randint(max(0, shift - 31), min(30, shift - 1))
            d = rng.randrange(2**(30 - t) | 1, 2**(31 - t), 2)
            j_max = min(2**(32 - shift + t) - 1, 2**20)
            j = rng.randrange(1, j_max + 1, 2) * rng.choice((-1, 1))
            xs.append(j * 2**(shift - 1 - t))
            m0s.append(d * 2**t)
            shifts.append(shift)
            expected.append((j * d + 1) // 2)
    assert all(abs(x) < 2**31 and 2**30 <= m0 < 2**31 for x, m0 in zip(xs, m0s))
    assert sum(e < 0 for e in expected) > 100 and sum(e > 0 for e in expected) > 100
    channels = len(xs)
    x = torch.tensor(xs).view(1, channels, 1, 1)
    out = both_ariths(ops.requantize, x, torch.tensor(m0s), torch.tensor(shifts),
                      -2**62, 2**62)
    assert out.flatten().tolist() == expected
    assert expected == [round_half_up(Fraction(x * m0, 2**s))
                        for x, m0, s in zip(xs, m0s, shifts)]


def test_requantize_ties_next_to_clamp():
    # M = 0.5 at shift 31: x = 31 -> 15.5 -> 16 -> clamped to 15; x = -1 -> -0.5 -> 0.
    x = torch.tensor([29, 30, 31, -1, -2, -3]).view(1, 1, 1, 6)
    out = both_ariths(ops.requantize, x, torch.tensor([2**30]), torch.tensor([31]), 0, 15)
    assert out.flatten().tolist() == [15, 15, 15, 0, 0, 0]
    out = both_ariths(ops.requantize, x, torch.tensor([2**30]), torch.tensor([31]), -1, 14)
    assert out.flatten().tolist() == [14, 14, 14, 0, -1, -1]


@pytest.mark.parametrize('shift', [0, 8, FLOAT_MIN_SHIFT - 1, FLOAT_MAX_SHIFT + 1, 62])
def test_requantize_float_rejects_shift_outside_range(shift):
    x = torch.tensor([5.0, -7.0]).view(1, 2, 1, 1)
    m0, shifts = torch.tensor([2**30, 2**30]), torch.tensor([20, shift])
    with pytest.raises(ValueError, match=re.escape(
            f'float simulation supports shifts 16..{FLOAT_MAX_SHIFT}, got [{min(shift, 20)}, '
            f'{max(shift, 20)}]')):
        ops.requantize(x, m0, shifts, -100, 100, 'float')
    # The integer engine has no such limit.
    out = ops.requantize(x.long(), m0, shifts, -2**62, 2**62, 'int')
    assert out.flatten().tolist() == [expected_requant(5, 2**30, 20, -2**62, 2**62),
                                      expected_requant(-7, 2**30, shift, -2**62, 2**62)]


def test_requantize_float_is_exact_up_to_the_engine_input_limit():
    # The float simulation covers what the engine's split product covers: |x| < 2^46
    # with any mantissa below 2^31, as long as the result stays below 2^52.
    rng = random.Random(46)
    m0 = torch.tensor([2**31 - 1, 2**30 + 1, 114311604, 1])
    shift = torch.tensor([FLOAT_MAX_SHIFT, FLOAT_MAX_SHIFT - 1, FLOAT_MAX_SHIFT, 40])
    big = 2**FLOAT_MAX_INPUT_BITS - 1
    edge = [big, -big, 2**35, -(2**35) - 1, 2**31 + 12345, 0, -1]
    # Exact ties (x * m0 an odd multiple of 2^(shift-1)) in channel 3: x = (2k+1) * 2^39.
    ties = [(2 * k + 1) * 2**39 for k in range(-3, 3)]
    columns = [edge + [rng.randrange(-big, big) for _ in range(9)] for _ in range(3)]
    columns.append(edge[:1] + ties + [rng.randrange(-big, big) for _ in range(9)])
    x = torch.tensor(list(zip(*columns))).view(-1, 4, 1, 1)
    out = both_ariths(ops.requantize, x, m0, shift, -2**51, 2**51)
    expected = [[expected_requant(v, int(m0[c]), int(shift[c]), -2**51, 2**51)
                 for c, v in enumerate(row)] for row in x.view(-1, 4).tolist()]
    assert out.view(-1, 4).tolist() == expected
    assert out[1:7, 3].flatten().tolist() == [(2 * k + 1 + 1) // 2 for k in range(-3, 3)]


def test_requantize_float_rejects_large_inputs():
    m0, shift = torch.tensor([2**31 - 1]), torch.tensor([FLOAT_MAX_SHIFT])
    for bad in (2.0**FLOAT_MAX_INPUT_BITS, -2.0**FLOAT_MAX_INPUT_BITS):
        with pytest.raises(OverflowError, match=re.escape(
                f'requantize: max |x| = {abs(bad):.0f} reaches 2^{FLOAT_MAX_INPUT_BITS}')):
            ops.requantize(torch.tensor([0.0, bad]), m0, shift, -10, 10, 'float')
    # A result that could reach 2^52 is refused too (here 2^45 * 2^31 / 2^16 = 2^60).
    with pytest.raises(OverflowError, match=r'times max m0 = 2147483647 over 2\^16 could reach'):
        ops.requantize(torch.tensor([2.0**45]), m0, torch.tensor([16]), -10, 10, 'float')
    with pytest.raises(ValueError, match=r'mantissas in \[0, 2\^31\), got -3\.\.-3'):
        ops.requantize(torch.tensor([1.0]), torch.tensor([-3]), shift, -10, 10, 'float')


@pytest.mark.parametrize('frac_bits', [0, 1, 15, 20])
def test_rescale_fixed_random_vs_fraction(frac_bits):
    gen = torch.Generator().manual_seed(frac_bits)
    mantissa = torch.randint(1, 2**17, (6,), generator=gen)
    x = torch.randint(-2**20, 2**20, (3, 6, 4, 5), generator=gen)
    # Force exact ties: x * M an odd multiple of 2^(f-1) in channel 0 (M = 3 * 2^(f-1)).
    if frac_bits:
        mantissa[0] = 3 * 2**(frac_bits - 1)
        x[:, 0] = 2 * x[:, 0] + 1
    out = both_ariths(ops.rescale_fixed, x, mantissa, frac_bits)
    expected = [[[[round_half_up(Fraction(v * int(mantissa[c]), 2**frac_bits)) for v in row]
                  for row in plane] for c, plane in enumerate(sample)] for sample in x.tolist()]
    assert out.tolist() == expected
    if frac_bits:
        ties = x[:, 0] * 3
        assert torch.equal(out[:, 0], torch.div(ties + 1, 2, rounding_mode='floor'))


def test_rescale_fixed_hand_values():
    # M = 1.5: -4.5 -> -4, -1.5 -> -1, 1.5 -> 2, 4.5 -> 5; M = 0.25 in channel 1.
    x = torch.tensor([[-3, -1, 1, 3], [-6, -2, 2, 6]]).view(1, 2, 1, 4)
    out = both_ariths(ops.rescale_fixed, x, torch.tensor([3 * 2**14, 2**13]), 15)
    assert out.view(2, 4).tolist() == [[-4, -1, 2, 5], [-1, 0, 1, 2]]
    one = both_ariths(ops.rescale_fixed, x, torch.tensor([3 * 2**14]), 15)
    assert one.view(2, 4).tolist() == [[-4, -1, 2, 5], [-9, -3, 3, 9]]


def test_rescale_fixed_float_overflow_near_2_pow_52():
    # a large ratio (2^20 + 1/2) on large operands: exact in both arithmetics
    mantissa = torch.tensor([2**35 + 2**14])
    below = torch.tensor([2**26 + 3, -(2**26 + 3)])
    assert both_ariths(ops.rescale_fixed, below, mantissa, 15).tolist() == [
        round_half_up(Fraction(v * (2**35 + 2**14), 2**15)) for v in below.tolist()]
    for x in (2**32, -2**32):
        with pytest.raises(OverflowError, match=r'rescale_fixed: \|x \* mantissa\| is too large'):
            ops.rescale_fixed(torch.tensor([1.0, float(x)]), mantissa, 15, 'float')


CONV_CASES = [
    dict(stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1),
    dict(stride=(2, 2), padding=(1, 1), dilation=(1, 1), groups=1),
    dict(stride=(1, 2), padding=(2, 1), dilation=(2, 1), groups=2),
    dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=4),
]


@pytest.mark.parametrize('geometry', CONV_CASES)
@pytest.mark.parametrize('with_bias', [True, False])
def test_conv2d_int_equals_float(geometry, with_bias):
    gen = torch.Generator().manual_seed(len(str(geometry)))
    groups = geometry['groups']
    x = torch.randint(-256, 256, (2, 4, 9, 11), generator=gen)
    weight = torch.randint(-8, 8, (8, 4 // groups, 3, 3), generator=gen)
    bias = torch.randint(-2**20, 2**20, (8,), generator=gen) if with_bias else None
    out = both_ariths(ops.conv2d, x, weight, bias, *geometry.values())
    reference = F.conv2d(x.double(), weight.double(), None if bias is None else bias.double(),
                         **geometry)
    assert torch.equal(out.double(), reference)
    assert out.abs().max() > 1000


def test_conv2d_hand_values():
    x = torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9]]).view(1, 1, 3, 3)
    weight = torch.tensor([[1, -1], [2, 0]]).view(1, 1, 2, 2)
    out = both_ariths(ops.conv2d, x, weight, torch.tensor([100]), (1, 1), (0, 0), (1, 1), 1)
    # e.g. top left: 1 - 2 + 2 * 4 = 7.
    assert out.view(2, 2).tolist() == [[107, 109], [113, 115]]
    out = both_ariths(ops.conv2d, x, weight, None, (2, 2), (1, 1), (1, 1), 1)
    # Zero padding: top left sees only x[0, 0] under the weight's 0.
    assert out.view(2, 2).tolist() == [[0, 4], [-4, 15]]


@pytest.mark.parametrize('in_size, size', [((5, 7), (10, 13)), ((3, 3), (7, 5)),
                                           ((4, 6), (9, 11)), ((2, 5), (5, 16)),
                                           ((6, 6), (6, 6))])
def test_upsample_nearest_matches_interpolate(in_size, size):
    gen = torch.Generator().manual_seed(sum(size))
    x = torch.randint(-2**20, 2**20, (2, 3, *in_size), generator=gen)
    out = ops.upsample_nearest(x, size)
    assert out.dtype == torch.int64 and out.shape == (2, 3, *size)
    reference = F.interpolate(x.float(), size=size, mode='nearest')
    assert torch.equal(out, reference.long())
    out_float = ops.upsample_nearest(x.double(), size)
    assert out_float.dtype == torch.float64 and torch.equal(out_float, out.double())


def test_upsample_nearest_hand_values():
    # Rows 2 -> 3 take source rows 0, 0, 1; columns 3 -> 4 take 0, 0, 1, 2.
    x = torch.tensor([[1, 2, 3], [4, 5, 6]]).view(1, 1, 2, 3)
    out = ops.upsample_nearest(x, (3, 4))
    assert out.view(3, 4).tolist() == [[1, 1, 2, 3], [1, 1, 2, 3], [4, 4, 5, 6]]


def test_check_arith():
    assert ops.check_arith('int') == 'int' and ops.check_arith('float') == 'float'
    with pytest.raises(ValueError, match=r"arith='double' is invalid; expected one of "
                       r"\('int', 'float'\)"):
        ops.check_arith('double')


def test_rescale_fixed_int_refuses_an_int64_overflow():
    with pytest.raises(OverflowError, match='2\\^63'):
        ops.rescale_fixed(torch.tensor([2**48 + 1]), torch.tensor([2**15]), 15, 'int')
    assert ops.rescale_fixed(torch.tensor([2**40]), torch.tensor([2**15]), 15, 'int').item() \
        == 2**40
