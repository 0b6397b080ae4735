"""Integer-aware fake quantization: half-up rounding, grid biases, the engine's requantization."""
import torch
from torch import nn

from mmaqd.quant import (QBN, EngineRequant, LSQQuantizer, QAdd, QConv, fake_quantize,
                         set_integer_aware)


def test_half_up_rounds_ties_up_and_keeps_the_lsq_gradients():
    x = torch.tensor([0.25, 0.75, 1.25, -0.25, 0.5, 2.0], requires_grad=True)
    scale = torch.tensor([0.5], requires_grad=True)
    # x / s = 0.5, 1.5, 2.5, -0.5, 1, 4: ties to even give 0, 2, 2, -0 ...
    even = fake_quantize(x, scale, -4, 3)
    assert even.tolist() == [0.0, 1.0, 1.0, -0.0, 0.5, 1.5]
    up = fake_quantize(x, scale, -4, 3, half_up=True)
    # ... half up: floor(v + 1/2) = 1, 2, 3, 0, 1, and 4 clamps to 3
    assert up.tolist() == [0.5, 1.0, 1.5, 0.0, 0.5, 1.5]
    up.sum().backward()
    # x: 1 strictly inside (-4, 3), 0 at 4 >= Qp; s: sum(q - x/s) inside + Qp outside
    assert x.grad.tolist() == [1, 1, 1, 1, 1, 0]
    expected = (1 - 0.5) + (2 - 1.5) + (3 - 2.5) + (0 + 0.5) + (1 - 1) + 3
    assert torch.allclose(scale.grad, torch.tensor([expected]))


def test_engine_requant_recovers_the_integers_and_rounds_half_up():
    unit = torch.tensor([0.1, 0.3])
    # m0 / 2^shift = 0.5 on channel 0 and 0.75 on channel 1
    requant = EngineRequant(unit, torch.tensor([1 << 30, 3 << 29]), torch.tensor([31, 31]))
    n = torch.tensor([[3.0, 5.0], [-1.0, 7.0]]).view(2, 2, 1, 1)
    x = (n * unit.view(1, 2, 1, 1)).float()  # the producer's output, float32-rounded
    out = requant(x, (0, 15), torch.tensor([2.0]))
    # 3 * 0.5 = 1.5 -> 2 and -1 * 0.5 = -0.5 -> 0 (ties up); 3.75 -> 4; 5.25 -> 5
    codes = torch.tensor([[2.0, 4.0], [0.0, 5.0]])
    assert out.dtype == torch.float32
    assert torch.equal(out.view(2, 2), 2.0 * codes)


def test_lsq_quantizer_uses_the_engine_requant_in_eval_mode_only():
    q = LSQQuantizer.for_activations(4, signed=False, name='q')
    q.set_scale(torch.tensor([0.5]))
    q.engine_requant = EngineRequant(torch.tensor([0.25]), torch.tensor([1 << 30]),
                                     torch.tensor([31]))
    x = torch.tensor([0.75, 1.7]).view(1, 2, 1, 1)  # n = 3, 7 (1.7 / 0.25 = 6.8 -> 7)
    q.eval()
    # codes floor(n / 2 + 1/2) = 2, 4 in steps of 0.5
    assert q(x).flatten().tolist() == [1.0, 2.0]
    q.train()
    # plain fake quantization: 0.75 / 0.5 = 1.5 -> 2 (even), 3.4 -> 3
    assert q(x).flatten().tolist() == [1.0, 1.5]


def test_qconv_bias_on_the_accumulator_grid_with_a_straight_through_gradient():
    conv = QConv(1, 2, 1, bias=True, w_bits=4, a_bits=4)
    conv.weight_quantizer.set_scale(torch.tensor([0.5]))
    conv.input_quantizer.set_scale(torch.tensor([0.25]))
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.bias.copy_(torch.tensor([0.2, -0.3]))
    conv.integer_aware = True
    conv.train()
    x = torch.zeros(1, 1, 1, 1)
    out = conv(x)
    # S = 0.125: 0.2 / S = 1.6 -> 2, -0.3 / S = -2.4 -> -2
    assert out.flatten().tolist() == [0.25, -0.25]
    out.sum().backward()
    assert conv.bias.grad.tolist() == [1.0, 1.0]


def test_qconv_eval_convolves_integer_codes_exactly():
    torch.manual_seed(0)
    conv = QConv(8, 4, 3, padding=1, bias=False, w_bits=4, a_bits=4)
    conv.train()
    x = torch.rand(2, 8, 6, 6) * 3
    conv(x)  # initialises both steps
    conv.eval()
    conv.integer_aware = True
    out = conv(x)
    codes_x = conv.input_quantizer.integer_codes(x).double()
    codes_w = conv.weight_quantizer.integer_codes(conv.weight).double()
    acc = torch.nn.functional.conv2d(codes_x, codes_w, padding=1)
    assert torch.equal(torch.round(out.double() / conv.accumulator_unit().double()), acc)


def test_qbn_with_gamma_zero_is_the_constant_beta_on_the_grid():
    bn = QBN(2, simulate_bias_rounding=True).eval()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([0.0, 2.0]))
        bn.bias.copy_(torch.tensor([0.33, 0.0]))
    bn.set_input_unit(0.1)
    out = bn(torch.ones(1, 2, 1, 1))
    # channel 0: round(0.33 / 0.1) * 0.1; channel 1: 2 / sqrt(1 + eps) * (1 + 0)
    assert torch.allclose(out.flatten(), torch.tensor([0.3, 2 / (1 + 1e-5)**0.5]))
    assert torch.isfinite(out).all()


def test_set_integer_aware_switches_every_layer_and_back():
    model = nn.Sequential(QConv(3, 4, 1, w_bits=4, a_bits=4, num_levels=2), QBN(4), QAdd())
    counts = set_integer_aware(model)
    assert counts == {'QConv': 1, 'QBN': 1, 'QAdd': 1, 'input quantizers': 2}
    assert model[0].integer_aware and model[1].simulate_bias_rounding
    assert model[2].simulate_alignment
    assert all(q.round_half_up for q in model[0].input_quantizers)
    model[1].set_input_unit(0.5)
    model[2].set_units(0.5, 0.25)
    model[0].input_quantizers[1].engine_requant = 'set'
    set_integer_aware(model, False)
    assert not model[0].integer_aware and not model[1].simulate_bias_rounding
    assert model[1].input_unit is None and model[2].unit_x is None
    assert model[0].input_quantizers[1].engine_requant is None
