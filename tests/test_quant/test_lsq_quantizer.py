import math

import pytest
import torch

from mmaqd.quant import LSQQuantizer
from mmaqd.quant.ste import round_ste

# x / 0.5 = [-6, -2.4, -0.6, 0.2, 0.8, 1.8, 3.2, 10]: no ties, values below,
# inside and above every range tested.
X = torch.tensor([-3.0, -1.2, -0.3, 0.1, 0.4, 0.9, 1.6, 5.0])
STEP = 0.5
CODES = {
    (2, True): [-2, -2, -1, 0, 1, 1, 1, 1],
    (2, False): [0, 0, 0, 0, 1, 2, 3, 3],
    (3, True): [-4, -2, -1, 0, 1, 2, 3, 3],
    (3, False): [0, 0, 0, 0, 1, 2, 3, 7],
    (4, True): [-6, -2, -1, 0, 1, 2, 3, 7],
    (4, False): [0, 0, 0, 0, 1, 2, 3, 10],
    (8, True): [-6, -2, -1, 0, 1, 2, 3, 10],
    (8, False): [0, 0, 0, 0, 1, 2, 3, 10],
}
# Per channel (dim 0): steps [0.5, 0.25]; x / step rounds to [-6, 1, 2, 10] in
# row 0 and [-12, 2, 4, 20] in row 1.
X_PC = torch.tensor([[-3.0, 0.4, 0.9, 5.0], [-3.0, 0.4, 0.9, 5.0]])
STEP_PC = [0.5, 0.25]
CODES_PC = {
    (2, True): [[-2, 1, 1, 1], [-2, 1, 1, 1]],
    (2, False): [[0, 1, 2, 3], [0, 2, 3, 3]],
    (3, True): [[-4, 1, 2, 3], [-4, 2, 3, 3]],
    (3, False): [[0, 1, 2, 7], [0, 2, 4, 7]],
    (4, True): [[-6, 1, 2, 7], [-8, 2, 4, 7]],
    (4, False): [[0, 1, 2, 10], [0, 2, 4, 15]],
    (8, True): [[-6, 1, 2, 10], [-12, 2, 4, 20]],
    (8, False): [[0, 1, 2, 10], [0, 2, 4, 20]],
}


def make(bits, signed, step, **kwargs):
    quantizer = LSQQuantizer(bits, signed, **kwargs)
    with torch.no_grad():
        quantizer.step.copy_(torch.as_tensor(step, dtype=torch.float32))
    quantizer.initialized.fill_(True)
    return quantizer


@pytest.mark.parametrize('bits, signed', sorted(CODES))
def test_forward_per_tensor(bits, signed):
    quantizer = make(bits, signed, [STEP])
    codes = torch.tensor(CODES[bits, signed])
    assert torch.allclose(quantizer(X), codes * STEP)
    assert torch.equal(quantizer.integer_codes(X), codes.to(torch.int32))
    assert torch.equal(quantizer.get_scale(), torch.tensor([STEP]))


@pytest.mark.parametrize('bits, signed', sorted(CODES_PC))
def test_forward_per_channel(bits, signed):
    quantizer = make(bits, signed, STEP_PC, per_channel=True, num_channels=2)
    codes = torch.tensor(CODES_PC[bits, signed])
    assert torch.allclose(quantizer(X_PC), codes * torch.tensor(STEP_PC)[:, None])
    assert torch.equal(quantizer.integer_codes(X_PC), codes.to(torch.int32))


def test_per_channel_broadcasts_along_dim0_of_conv_weight():
    quantizer = make(4, True, [1.0, 0.1, 0.01], per_channel=True, num_channels=3)
    weight = torch.full((3, 2, 3, 3), 0.33)  # / step = 0.33, 3.3, 33 (> Qp)
    out = quantizer(weight)
    assert torch.allclose(out[0], torch.zeros(2, 3, 3))
    assert torch.allclose(out[1], torch.full((2, 3, 3), 0.3))
    assert torch.allclose(out[2], torch.full((2, 3, 3), 0.07))


@pytest.mark.parametrize('grad_scale', [False, True])
def test_gradients_signed_per_tensor(grad_scale):
    quantizer = make(4, True, [STEP], grad_scale=grad_scale)
    x = X.clone().requires_grad_()
    grad_out = torch.arange(1.0, 9.0)
    quantizer(x).backward(grad_out)
    # x / s = [-6, -2.4, -0.6, 0.2, 0.8, 1.8, 3.2, 10]; only 10 > Qp = 7.
    assert torch.equal(x.grad, torch.tensor([1., 2, 3, 4, 5, 6, 7, 0]))
    # Inside: q - x/s = [0, .4, -.4, -.2, .2, .2, -.2]; above: Qp = 7.
    expected = 1 * 0 + 2 * .4 - 3 * .4 - 4 * .2 + 5 * .2 + 6 * .2 - 7 * .2 + 8 * 7
    if grad_scale:
        expected /= math.sqrt(8 * 7)
    assert quantizer.step.grad.shape == (1, )
    assert quantizer.step.grad.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize('grad_scale', [False, True])
def test_gradients_unsigned_per_tensor(grad_scale):
    quantizer = make(2, False, [STEP], grad_scale=grad_scale)
    x = X.clone().requires_grad_()
    grad_out = torch.arange(1.0, 9.0)
    quantizer(x).backward(grad_out)
    # Range [0, 3]: 0.2, 0.8, 1.8 inside; negatives below (Qn = 0); 3.2, 10 above.
    assert torch.equal(x.grad, torch.tensor([0., 0, 0, 4, 5, 6, 0, 0]))
    expected = 4 * -.2 + 5 * .2 + 6 * .2 + 7 * 3 + 8 * 3
    if grad_scale:
        expected /= math.sqrt(8 * 3)
    assert quantizer.step.grad.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize('grad_scale', [False, True])
def test_gradients_per_channel(grad_scale):
    quantizer = make(4, True, STEP_PC, per_channel=True, num_channels=2, grad_scale=grad_scale)
    x = X_PC.clone().requires_grad_()
    grad_out = torch.tensor([[1.0, 2, 3, 4], [5, 6, 7, 8]])
    quantizer(x).backward(grad_out)
    assert torch.equal(x.grad, torch.tensor([[1., 2, 3, 0], [0, 6, 7, 0]]))
    # Row 0: x/s = [-6, .8, 1.8, 10]; row 1: [-12, 1.6, 3.6, 20] (-12 < Qn = -8).
    expected = torch.tensor([2 * .2 + 3 * .2 + 4 * 7, 5 * -8 + 6 * .4 + 7 * .4 + 8 * 7])
    if grad_scale:
        expected /= math.sqrt(4 * 7)  # 4 elements share each step
    assert torch.allclose(quantizer.step.grad, expected)


@pytest.mark.parametrize('per_channel', [False, True])
def test_gradients_match_autograd_reference(per_channel):
    torch.manual_seed(0)
    x = torch.randn(3, 4, 5, 5)
    step = torch.tensor([0.3, 0.2, 0.25]) if per_channel else torch.tensor([0.3])
    quantizer = make(3, True, step, per_channel=per_channel, num_channels=3)
    grad_out = torch.randn_like(x)
    xa = x.clone().requires_grad_()
    quantizer(xa).backward(grad_out)

    xb = x.clone().requires_grad_()
    step_b = step.clone().requires_grad_()
    s = step_b.view(-1, 1, 1, 1) if per_channel else step_b
    n_per_step = x.numel() / step.numel()
    g = 1 / math.sqrt(n_per_step * 3)
    s_scaled = s * g + (s - s * g).detach()
    (round_ste((xb / s_scaled).clamp(-4, 3)) * s_scaled).backward(grad_out)
    assert torch.allclose(xa.grad, xb.grad)
    assert torch.allclose(quantizer.step.grad, step_b.grad, rtol=1e-4, atol=1e-6)


def test_init_from_first_batch_only():
    quantizer = LSQQuantizer(4, True)
    assert not quantizer.initialized
    quantizer(torch.tensor([-3.0, 1.0, 2.0, -2.0]))  # mean |x| = 2
    assert quantizer.initialized
    assert quantizer.step.item() == pytest.approx(2 * 2 / math.sqrt(7))
    quantizer(torch.tensor([100.0, -100.0]))
    assert quantizer.step.item() == pytest.approx(2 * 2 / math.sqrt(7))

    unsigned = LSQQuantizer(4, False)
    unsigned(torch.tensor([0.0, 1.0, 2.0, 5.0]))  # mean |x| = 2
    assert unsigned.step.item() == pytest.approx(2 * 2 / math.sqrt(15))


def test_init_per_channel():
    quantizer = LSQQuantizer(2, True, per_channel=True, num_channels=2)
    quantizer(torch.tensor([[1.0, -3.0], [0.5, 0.5]]))
    assert torch.allclose(quantizer.step, torch.tensor([2 * 2.0, 2 * 0.5]))  # sqrt(Qp) = 1


def test_initialized_survives_state_dict_round_trip():
    source = LSQQuantizer(4, False)
    source(torch.tensor([1.0, 3.0]))
    target = LSQQuantizer(4, False)
    target.load_state_dict(source.state_dict())
    assert target.initialized
    target(torch.tensor([50.0, 70.0]))
    assert target.step.item() == pytest.approx(source.step.item())


def test_set_bits_rescales_step_to_keep_the_clipping_range():
    quantizer = make(4, True, [0.5])  # signed: Qp = 7, range 0.5 * 7
    quantizer.set_bits(2)
    assert quantizer.step.item() == pytest.approx(0.5 * 7 / 1)
    assert quantizer.code_range == (-2, 1)
    quantizer.set_bits(8)
    assert quantizer.step.item() == pytest.approx(0.5 * 7 / 127)
    quantizer.set_bits(32)
    assert quantizer.step.item() == pytest.approx(0.5 * 7 / 127)
    unsigned = make(4, False, [0.5])  # Qp = 15
    unsigned.set_bits(2)
    assert unsigned.step.item() == pytest.approx(0.5 * 15 / 3)


def test_set_bits_without_adapting_keeps_the_step():
    quantizer = make(4, True, [0.5])
    quantizer.set_bits(2, adapt=False)
    assert quantizer.step.item() == 0.5 and quantizer.code_range == (-2, 1)


def test_32_bits_is_identity():
    quantizer = LSQQuantizer(32, True)
    x = torch.randn(5)
    assert quantizer(x) is x
    assert not quantizer.initialized
    with pytest.raises(RuntimeError, match='32 bits'):
        quantizer.integer_codes(x)


def test_step_stays_positive_and_keeps_gradient():
    quantizer = make(4, False, [-1.0])
    x = torch.tensor([0.5, 2.0])
    out = quantizer(x)
    assert torch.isfinite(out).all()
    assert quantizer.get_scale().item() == pytest.approx(quantizer.min_step)
    out.sum().backward()
    # Both inputs are clipped at Qp = 15, so d(out)/ds = 15 each (unscaled by the clamp).
    assert quantizer.step.grad.item() == pytest.approx(30 / math.sqrt(2 * 15))


def test_per_channel_needs_num_channels():
    with pytest.raises(ValueError, match='num_channels'):
        LSQQuantizer(4, True, per_channel=True, num_channels=0)


def test_gradient_at_range_ends_follows_lsq_paper():
    # The paper's inside is the open interval Qn < x/s < Qp; at the ends the step
    # gets Qn / Qp and x gets no gradient.
    quantizer = make(3, True, [0.5], grad_scale=False)
    x = torch.tensor([-2.0, 1.5, 1.4], requires_grad=True)  # x/s = -4 = Qn, 3 = Qp, 2.8
    quantizer(x).sum().backward()
    assert torch.equal(x.grad, torch.tensor([0.0, 0.0, 1.0]))
    assert quantizer.step.grad.item() == pytest.approx(-4 + 3 + (3 - 2.8), rel=1e-5)


def test_lsq_rescale_rule_follows_the_initial_step_ratio():
    quantizer = make(8, False, [0.5])  # Qp 255
    quantizer.step_rescale = 'lsq'
    quantizer.set_bits(4)  # Qp 15
    assert quantizer.step.item() == pytest.approx(0.5 * (255 / 15)**0.5)
