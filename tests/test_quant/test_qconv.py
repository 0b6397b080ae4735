import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmaqd.quant import ClipQuantizer, LSQQuantizer, MinMaxQuantizer, QConv


def set_step(quantizer, step):
    with torch.no_grad():
        quantizer.step.copy_(torch.as_tensor(step, dtype=torch.float32))
    quantizer.initialized.fill_(True)


@pytest.mark.parametrize('kwargs', [
    dict(), dict(stride=2, padding=1, bias=False), dict(padding=2, dilation=2, groups=2)
])
def test_32_bits_equals_conv2d_exactly(kwargs):
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, **kwargs)
    qconv = QConv(4, 6, 3, **kwargs)
    qconv.load_state_dict(conv.state_dict(), strict=False)
    x = torch.randn(2, 4, 9, 9)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_a, out_b = conv(xa), qconv(xb)
    assert torch.equal(out_a, out_b)
    grad = torch.randn_like(out_a)
    out_a.backward(grad)
    out_b.backward(grad)
    assert torch.equal(xa.grad, xb.grad)
    assert torch.equal(conv.weight.grad, qconv.weight.grad)


def test_quantized_forward_against_hand_values():
    conv = QConv(1, 1, 1, bias=False, w_bits=2, a_bits=2)
    with torch.no_grad():
        conv.weight.fill_(0.7)
    set_step(conv.weight_quantizer, 0.5)  # 0.7 / 0.5 = 1.4 -> 1 -> w = 0.5
    set_step(conv.input_quantizer, 1.0)  # unsigned 2-bit: codes 0..3
    x = torch.tensor([-1.0, 0.4, 1.6, 2.2, 7.0]).view(1, 1, 1, 5)
    expected = torch.tensor([0.0, 0.0, 2.0, 2.0, 3.0]) * 0.5
    assert torch.allclose(conv(x).flatten(), expected)


def test_input_quantized_before_zero_padding():
    torch.manual_seed(0)
    conv = QConv(2, 3, 3, padding=1, w_bits=3, a_bits=3)
    set_step(conv.weight_quantizer, 0.1)
    set_step(conv.input_quantizer, 0.3)
    x = torch.rand(1, 2, 4, 4) * 3
    x_q = (x / 0.3).round().clamp(0, 7) * 0.3
    w_q = (conv.weight / 0.1).round().clamp(-4, 3) * 0.1
    assert torch.allclose(conv(x), F.conv2d(x_q, w_q, conv.bias, padding=1), atol=1e-6)


def test_input_quant_modes():
    x = torch.tensor([-1.3, 0.4, 2.6]).view(1, 1, 1, 3)
    signed = QConv(1, 1, 1, bias=False, w_bits=32, a_bits=4, input_quant='signed')
    set_step(signed.input_quantizer, 1.0)
    unquantized = QConv(1, 1, 1, bias=False, w_bits=32, a_bits=4, input_quant=None)
    assert unquantized.input_quantizer is None and unquantized.a_bits is None
    with torch.no_grad():
        signed.weight.fill_(1.0)
        unquantized.weight.fill_(1.0)
    assert torch.equal(signed(x).flatten(), torch.tensor([-1.0, 0.0, 3.0]))
    assert torch.equal(unquantized(x), x)
    with pytest.raises(ValueError, match="QConv: input_quant='float' is invalid"):
        QConv(1, 1, 1, input_quant='float')


@pytest.mark.parametrize('quantizer, cls', [('LSQ', LSQQuantizer), ('Clip', ClipQuantizer),
                                            ('MinMax', MinMaxQuantizer)])
def test_quantizer_types_train(quantizer, cls):
    torch.manual_seed(0)
    conv = QConv(3, 4, 3, padding=1, w_bits=4, a_bits=4, quantizer=quantizer,
                 w_per_channel=True)
    assert type(conv.weight_quantizer) is cls and type(conv.input_quantizer) is cls
    assert conv.weight_quantizer.signed and not conv.input_quantizer.signed
    x = torch.rand(2, 3, 5, 5, requires_grad=True)
    conv(x).square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert torch.isfinite(conv.weight.grad).all() and conv.weight.grad.abs().sum() > 0
    assert conv.weight_quantizer.get_scale().shape == (4, )


def test_set_bits():
    conv = QConv(2, 2, 1, w_bits=4, a_bits=4)
    set_step(conv.weight_quantizer, 0.3)
    conv.set_bits(w_bits=2)
    assert (conv.w_bits, conv.a_bits) == (2, 4)
    assert conv.weight_quantizer.step.item() == pytest.approx(0.3 * 7)  # signed Qp 7 -> 1
    conv.set_bits(a_bits=32)
    assert conv.a_bits == 32
    QConv(2, 2, 1, input_quant=None).set_bits(a_bits=4)


def test_accumulator_unit():
    conv = QConv(2, 3, 1, w_bits=4, a_bits=4, w_per_channel=True)
    set_step(conv.weight_quantizer, [0.1, 0.2, 0.4])
    set_step(conv.input_quantizer, 0.5)
    assert torch.allclose(conv.accumulator_unit(), torch.tensor([0.05, 0.1, 0.2]))
    stem = QConv(2, 3, 1, w_bits=8, input_quant=None)
    set_step(stem.weight_quantizer, 0.25)
    assert torch.allclose(stem.accumulator_unit(), torch.tensor([0.25]))
    with pytest.raises(RuntimeError, match='QConv input quantizer'):
        QConv(2, 3, 1, w_bits=4, a_bits=32).accumulator_unit()


def test_state_dict_round_trip():
    source = QConv(2, 3, 3, w_bits=4, a_bits=4)
    source(torch.rand(1, 2, 5, 5))
    target = QConv(2, 3, 3, w_bits=4, a_bits=4)
    target.load_state_dict(source.state_dict())
    x = torch.rand(1, 2, 5, 5)
    assert torch.equal(source(x), target(x))


def test_per_level_input_quantizers_are_private_and_share_the_weight():
    conv = QConv(1, 1, 1, bias=False, w_bits=8, a_bits=2, num_levels=3)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    set_step(conv.weight_quantizer, 1 / 127)  # weight 1.0 is exact
    for level, step in enumerate((1.0, 0.5, 2.0)):
        set_step(conv.input_quantizers[level], step)
    x = torch.tensor([0.9, 1.3, 5.4]).view(1, 1, 1, 3)
    expected = {0: [1.0, 1.0, 3.0], 1: [1.0, 1.5, 1.5], 2: [0.0, 2.0, 6.0]}
    for level, values in expected.items():
        out = conv(x, level=level).flatten()
        assert torch.allclose(out, torch.tensor(values)), (level, out)
        assert torch.allclose(conv.accumulator_unit(level),
                              torch.tensor([(1.0, 0.5, 2.0)[level] / 127]))
    assert conv.input_quantizer is conv.input_quantizers[0]
    conv.set_bits(a_bits=4)
    assert [q.bits for q in conv.input_quantizers] == [4, 4, 4]
    with pytest.raises(IndexError, match='level 3 is out of range for num_levels=3'):
        conv(x, level=3)
    with pytest.raises(ValueError, match='num_levels must be a positive int, got 0'):
        QConv(1, 1, 1, num_levels=0)


def test_per_level_input_quantizers_survive_a_quantizer_type_change():
    conv = QConv(2, 2, 3, w_bits=4, a_bits=4, num_levels=2)
    conv.set_quantizer_type('Clip')
    assert len(conv.input_quantizers) == 2
    assert all(type(q) is ClipQuantizer for q in conv.input_quantizers)
    assert sorted(k for k in conv.state_dict() if 'input' in k) == [
        'input_quantizers.0.clip_value', 'input_quantizers.1.clip_value']


@pytest.mark.parametrize('quantizer', ['LSQ', 'Clip'])
def test_quantizer_parameters_train_only_while_quantizing(quantizer):
    """At 32 bits a quantizer is unused; DDP refuses trainable parameters without gradient."""
    conv = QConv(2, 3, 3, w_bits=32, a_bits=32, quantizer=quantizer)
    own = [p for q in (conv.weight_quantizer, conv.input_quantizer) for p in q.parameters()]
    assert own and not any(p.requires_grad for p in own)
    conv(torch.randn(1, 2, 5, 5)).sum().backward()
    assert all(p.grad is None for p in own)
    conv.set_bits(w_bits=4, a_bits=4)
    assert all(p.requires_grad for p in own)
    conv(torch.randn(1, 2, 5, 5)).sum().backward()
    assert all(p.grad is not None for p in own)
    conv.set_bits(w_bits=32)
    assert not any(p.requires_grad for p in conv.weight_quantizer.parameters())
    assert all(p.requires_grad for p in conv.input_quantizer.parameters())
