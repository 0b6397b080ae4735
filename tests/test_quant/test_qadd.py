import torch

from mmaqd.quant import QAdd, apply_fixed_point, fixed_point_multiplier

UNIT_X = torch.tensor([0.5, 0.2])
UNIT_Y = torch.tensor([0.25, 0.3])
# Channel 0: X = x / 0.5 = [2, 2.8 -> 3], Y = y / 0.25 = [1.2 -> 1, -2.4 -> -2];
# output unit 0.25, X rescaled by 2: (4 + 1, 6 - 2) * 0.25.
# Channel 1: X = [3, -1], Y = [1, 3]; output unit 0.2, Y rescaled by 1.5 rounding
# half up: [1.5 -> 2, 4.5 -> 5]; (3 + 2, -1 + 5) * 0.2.
X = torch.tensor([[1.0, 1.4], [0.6, -0.2]]).view(1, 2, 1, 2)
Y = torch.tensor([[0.3, -0.6], [0.3, 0.9]]).view(1, 2, 1, 2)
EXPECTED = torch.tensor([[5 * 0.25, 4 * 0.25], [5 * 0.2, 4 * 0.2]]).view(1, 2, 1, 2)


def test_float_add_by_default():
    add = QAdd()
    assert torch.equal(add(X, Y), X + Y)
    add.set_units(UNIT_X, UNIT_Y)
    assert torch.equal(add(X, Y), X + Y)
    assert QAdd(simulate_alignment=True)(X, Y).equal(X + Y)


def test_alignment_values():
    add = QAdd(simulate_alignment=True)
    add.set_units(UNIT_X, UNIT_Y)
    align = add.alignment()
    assert align.output_unit.dtype == torch.float64
    assert torch.allclose(align.output_unit, torch.tensor([0.25, 0.2], dtype=torch.float64))
    assert torch.equal(align.mantissa_x, torch.tensor([2 * 2**15, 2**15]))
    assert torch.equal(align.mantissa_y, torch.tensor([2**15, 3 * 2**14]))
    assert align.frac_bits == 15


def test_simulated_alignment_against_hand_values():
    add = QAdd(simulate_alignment=True)
    add.set_units(UNIT_X, UNIT_Y)
    assert torch.allclose(add(X, Y), EXPECTED)
    assert not torch.allclose(add(X, Y), X + Y)
    # Symmetric in its operands.
    add.set_units(UNIT_Y, UNIT_X)
    assert torch.allclose(add(Y, X), EXPECTED)


def test_simulated_alignment_gradient_is_straight_through():
    add = QAdd(simulate_alignment=True)
    add.set_units(UNIT_X, UNIT_Y)
    x, y = X.clone().requires_grad_(), Y.clone().requires_grad_()
    add(x, y).sum().backward()
    assert torch.allclose(x.grad, torch.ones_like(X))
    assert torch.allclose(y.grad, torch.ones_like(Y))


def test_per_tensor_units_broadcast():
    add = QAdd(simulate_alignment=True)
    add.set_units(0.5, 0.25)
    # X = x / 0.5 = [2, 3 | 1, 0], doubled to the output unit 0.25;
    # Y = y / 0.25 = [1, -2 | 1, 4].
    expected = torch.tensor([[5, 4], [3, 4]]).view(1, 2, 1, 2) * 0.25
    assert torch.allclose(add(X, Y), expected)


def test_fixed_point_matches_integer_shift():
    ratio = torch.tensor(1.2345)
    mantissa = fixed_point_multiplier(ratio)
    assert mantissa.item() == 40452  # round(1.2345 * 32768) = round(40452.1)
    ints = torch.arange(-300000, 300001, 7)  # |x * M0| far beyond float32's 2^24
    shifted = (ints * mantissa + 2**14) >> 15
    assert torch.equal(apply_fixed_point(ints.float(), mantissa).long(), shifted)
    # Ties round half up: 1.5 -> 2, -1.5 -> -1.
    half = fixed_point_multiplier(torch.tensor(0.5))
    assert torch.equal(apply_fixed_point(torch.tensor([3.0, -3.0]), half),
                       torch.tensor([2.0, -1.0]))
