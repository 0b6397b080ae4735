import pytest
import torch
from torch import nn

from mmaqd.integer.convert import fold_bn
from mmaqd.quant import QBN


def make_pair(**kwargs):
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(3, **kwargs)
    qbn = QBN(3, **kwargs)
    if bn.affine:
        with torch.no_grad():
            bn.weight.uniform_(0.5, 2)
            bn.bias.uniform_(-1, 1)
    qbn.load_state_dict(bn.state_dict())
    return bn, qbn


def test_default_is_batchnorm2d():
    bn, qbn = make_pair()
    x = torch.randn(2, 3, 4, 4)
    assert torch.equal(bn(x), qbn(x))
    assert torch.equal(bn.running_var, qbn.running_var)
    bn.eval(), qbn.eval()
    assert torch.equal(bn(x), qbn(x))
    # Simulation switched on but no unit yet: still plain BN.
    qbn.simulate_bias_rounding = True
    assert torch.equal(bn(x), qbn(x))


def set_running(qbn, gamma, beta, mean, var):
    with torch.no_grad():
        qbn.weight.copy_(torch.tensor(gamma))
        qbn.bias.copy_(torch.tensor(beta))
        qbn.running_mean.copy_(torch.tensor(mean))
        qbn.running_var.copy_(torch.tensor(var) - qbn.eps)


def test_fold_against_hand_values():
    qbn = QBN(2)
    # g' = gamma / sqrt(var + eps) = [4 / 2, 0.5 / 0.5] = [2, 1]
    # b' = beta / g' - mu = [1 / 2 - 0.3, -1 / 1 + 0.2] = [0.2, -0.8]
    set_running(qbn, [4.0, 0.5], [1.0, -1.0], [0.3, -0.2], [4.0, 0.25])
    folded = qbn.fold(0.1, torch.tensor([0.3, 0.25]))
    # S = [0.03, 0.025]: b' / S = [6.67, -32]
    assert torch.allclose(folded.unit, torch.tensor([0.03, 0.025], dtype=torch.float64))
    assert torch.allclose(folded.multiplier, torch.tensor([2.0, 1.0], dtype=torch.float64))
    assert torch.equal(folded.bias, torch.tensor([7, -32]))
    assert folded.bias.dtype == torch.int64
    # a conv bias b adds b / S: b = [0.02, 0] gives [7.33, -32] -> [7, -32]
    qbn.set_input_unit(0.03, torch.tensor([0.02, 0.0]))
    assert torch.equal(qbn.fold(0.1, torch.tensor([0.3, 0.25])).bias, torch.tensor([7, -32]))
    qbn.set_input_unit(0.03, torch.tensor([0.04, -0.02]))
    # [6.67 + 1.33, -32 - 0.8] = [8, -32.8]
    assert torch.equal(qbn.fold(0.1, torch.tensor([0.3, 0.25])).bias, torch.tensor([8, -33]))


def test_fold_is_the_integer_conversions_fold():
    # the same integer bias as the engine's conversion, conv bias included, in float64
    torch.manual_seed(0)
    qbn = QBN(64)
    set_running(qbn, (torch.rand(64) + 0.01).tolist(), torch.randn(64).tolist(),
                torch.randn(64).tolist(), (torch.rand(64) + 0.1).tolist())
    conv_bias = torch.randn(64)
    qbn.set_input_unit(1.0, conv_bias)
    s_x, s_w = 0.0123, torch.rand(64) * 0.01 + 1e-4
    folded = qbn.fold(s_x, s_w)
    bias, sign, _, constant = fold_bn(qbn, torch.tensor(s_x, dtype=torch.float64) *
                                      s_w.double(), conv_bias)
    assert not constant.any() and (sign == 1).all()
    assert torch.equal(folded.bias, bias)


def test_fold_refuses_what_has_no_folded_form():
    qbn = QBN(3)
    set_running(qbn, [1.0, 0.0, 1.0], [0.0, 0.5, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=r'channel 1: gamma is 0, so the BN outputs beta '
                       r'\(0.5\)'):
        qbn.fold(0.1, 1.0)
    set_running(qbn, [1.0, 1.0, 1e-30], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=r'channel 2: folded bias 1e\+32 accumulator units '
                       r'does not fit int64 \(gamma 1e-30, beta 1: a gamma near 0'):
        qbn.fold(0.1, 0.1)


def test_fold_without_affine():
    qbn = QBN(1, affine=False)
    with torch.no_grad():
        qbn.running_mean.fill_(0.26)
        qbn.running_var.fill_(1.0 - qbn.eps)
    folded = qbn.fold(0.1, 1.0)
    assert torch.equal(folded.bias, torch.tensor([-3]))  # -0.26 / 0.1 = -2.6
    assert torch.allclose(folded.multiplier, torch.tensor([1.0], dtype=torch.float64))


def test_simulated_bias_rounding_eval():
    qbn = QBN(2, simulate_bias_rounding=True).eval()
    set_running(qbn, [4.0, 0.5], [1.0, -1.0], [0.3, -0.2], [4.0, 0.25])
    qbn.set_input_unit(torch.tensor([0.03, 0.025]))
    x = torch.tensor([0.0, 1.0]).view(1, 1, 1, 2).expand(1, 2, 1, 2).contiguous()
    # g' * (x + S * B) with B = [7, -32]: ch0 2 * (x + 0.21), ch1 1 * (x - 0.8)
    expected = torch.tensor([[0.42, 2.42], [-0.8, 0.2]]).view(1, 2, 1, 2)
    assert torch.allclose(qbn(x), expected)
    # Float BN would give 2 * (x + 0.2): the rounding is visible.
    qbn.set_input_unit(None)
    assert torch.allclose(qbn(x)[0, 0], torch.tensor([[0.4, 2.4]]))


def test_simulated_bias_rounding_eval_gradients_are_straight_through():
    """out = g' * (x + S round(c / S)), c = beta / g' - mu, rounding straight-through:
    d out / d x = g', d out / d beta = 1, d out / d gamma = (x + S round(c / S) - beta / g')
    / sqrt(var + eps)."""
    qbn = QBN(2, simulate_bias_rounding=True).eval()
    set_running(qbn, [4.0, 0.5], [1.0, -1.0], [0.3, -0.2], [4.0, 0.25])
    qbn.set_input_unit(torch.tensor([0.03, 0.025]))
    x = torch.tensor([0.0, 1.0]).view(1, 1, 1, 2).expand(1, 2, 1, 2).contiguous()
    x.requires_grad_()
    qbn(x).sum().backward()
    # g' = [2, 1], sqrt(var + eps) = [2, 0.5], S round(c / S) = [0.21, -0.8], beta / g' = [0.5, -1]
    assert torch.allclose(x.grad, torch.tensor([2.0, 1.0]).view(1, 2, 1, 1).expand(1, 2, 1, 2))
    assert torch.allclose(qbn.bias.grad, torch.tensor([2.0, 2.0]))
    # ch0 ((0 + 0.21 - 0.5) + (1 + 0.21 - 0.5)) / 2, ch1 ((0 - 0.8 + 1) + (1 - 0.8 + 1)) / 0.5
    assert torch.allclose(qbn.weight.grad, torch.tensor([0.21, 2.8]))


def test_a_conv_bias_is_rounded_once_with_the_bn_bias():
    """The engine's ``B = round((beta / g' - mu + b) / S)``, not ``round(b / S)`` plus
    ``round((beta / g' - mu) / S)``: the conv already added ``S * round(b / S)``."""
    qbn = QBN(2, simulate_bias_rounding=True).eval()
    set_running(qbn, [4.0, 0.5], [1.0, -1.0], [0.3, -0.2], [4.0, 0.25])
    # c / S = [6.67, -32], b / S = [-0.3, 1.2]: B = [6, -31], the conv added [0, 1] * S
    qbn.set_input_unit(torch.tensor([0.03, 0.025]), conv_bias=torch.tensor([-0.009, 0.03]))
    x = torch.tensor([0.0, 1.0]).view(1, 1, 1, 2).expand(1, 2, 1, 2).contiguous()
    # ch0 2 * (x + 6 * 0.03), ch1 1 * (x + (-31 - 1) * 0.025); two roundings gave 2 * (x + 0.21)
    expected = torch.tensor([[0.36, 2.36], [-0.8, 0.2]]).view(1, 2, 1, 2)
    assert torch.allclose(qbn(x), expected)
    with pytest.raises(ValueError, match='conv bias must have 2 elements, got 3'):
        qbn.set_input_unit(0.1, conv_bias=torch.zeros(3))
    qbn.set_input_unit(None)
    assert qbn.input_unit is None and qbn.conv_bias is None


def test_a_conv_bias_in_training_with_batch_statistics():
    _, qbn = make_pair()
    qbn.simulate_bias_rounding = True
    conv_bias = torch.tensor([0.8, -1.3, 0.2])
    qbn.set_input_unit(0.5, conv_bias=conv_bias)
    x = torch.randn(4, 3, 3, 3) * 2 + 1
    out = qbn(x)
    mean, var = x.mean((0, 2, 3)), x.var((0, 2, 3), unbiased=False)
    g = qbn.weight / torch.sqrt(var + qbn.eps)
    grid = 0.5 * torch.round((qbn.bias / g - mean + conv_bias) / 0.5) - 0.5 * torch.round(
        conv_bias / 0.5)
    assert torch.allclose(out, g.view(1, 3, 1, 1) * (x + grid.view(1, 3, 1, 1)), atol=1e-5)


def test_simulated_bias_rounding_train():
    bn, qbn = make_pair()
    qbn.simulate_bias_rounding = True
    qbn.set_input_unit(0.5)
    x = torch.randn(4, 3, 3, 3) * 2 + 1
    out = qbn(x)
    mean, var = x.mean((0, 2, 3)), x.var((0, 2, 3), unbiased=False)
    g = qbn.weight / torch.sqrt(var + qbn.eps)
    b = 0.5 * torch.round((qbn.bias / g - mean) / 0.5)
    assert torch.allclose(out, g.view(1, 3, 1, 1) * (x + b.view(1, 3, 1, 1)), atol=1e-5)
    assert not torch.allclose(out, bn(x), atol=1e-3)
    # Running statistics are updated exactly like BatchNorm2d's.
    assert torch.allclose(qbn.running_mean, bn.running_mean)
    assert torch.allclose(qbn.running_var, bn.running_var)
    assert qbn.num_batches_tracked.item() == 1


def test_fine_unit_matches_bn_with_gradients():
    bn, qbn = make_pair()
    qbn.simulate_bias_rounding = True
    qbn.set_input_unit(1e-6)
    x = torch.randn(4, 3, 3, 3)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    grad = torch.randn(4, 3, 3, 3)
    out_a, out_b = bn(xa), qbn(xb)
    assert torch.allclose(out_a, out_b, atol=1e-4)
    out_a.backward(grad)
    out_b.backward(grad)
    assert torch.allclose(xa.grad, xb.grad, atol=1e-4)
    assert torch.allclose(bn.weight.grad, qbn.weight.grad, atol=1e-3)
    assert torch.allclose(bn.bias.grad, qbn.bias.grad, atol=1e-4)


def test_input_unit_validation_and_not_saved():
    qbn = QBN(3)
    with pytest.raises(ValueError, match='input unit'):
        qbn.set_input_unit(torch.tensor([0.1, 0.2]))
    with pytest.raises(ValueError, match='input unit'):
        qbn.set_input_unit(-1.0)
    qbn.set_input_unit([0.1, 0.2, 0.3])
    assert 'input_unit' not in qbn.state_dict()
