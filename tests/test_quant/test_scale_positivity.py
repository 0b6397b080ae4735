"""Learned scales (LSQ step, Clip clipping value) stay positive and outputs finite."""
import pytest
import torch

from mmaqd.quant import QConv

# The raw learned parameter of each quantizer type and the smallest value it is used at.
RAW = {'LSQ': ('step', 1e-8), 'Clip': ('clip_value', 1e-8)}


def make_conv(quantizer: str) -> QConv:
    torch.manual_seed(0)
    return QConv(4, 8, 3, padding=1, w_bits=4, a_bits=4, quantizer=quantizer,
                 input_quant='signed')


def scales(conv: QConv):
    return [conv.weight_quantizer.get_scale(), conv.input_quantizer.get_scale()]


@pytest.mark.parametrize('quantizer', sorted(RAW))
def test_absurd_learning_rate_keeps_scales_positive_and_outputs_finite(quantizer):
    conv = make_conv(quantizer)
    optimizer = torch.optim.SGD(conv.parameters(), lr=1e6)
    x = torch.randn(2, 4, 8, 8)
    went_negative = False
    for _ in range(4):
        loss = (conv(x) - 1).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        raw = [getattr(q, RAW[quantizer][0])
               for q in (conv.weight_quantizer, conv.input_quantizer)]
        went_negative |= any(bool((p <= 0).any()) for p in raw)
        for scale in scales(conv):
            assert torch.isfinite(scale).all() and (scale > 0).all()
        assert torch.isfinite(conv(x)).all()
    # The raw parameters did leave the positive range: the bound, not luck, held.
    assert went_negative


@pytest.mark.parametrize('quantizer', sorted(RAW))
def test_negative_raw_scale_is_used_at_its_bound_and_still_learns(quantizer):
    conv = make_conv(quantizer)
    x = torch.randn(2, 4, 8, 8)
    conv(x)  # LSQ: initialise the steps from data first
    name, bound = RAW[quantizer]
    for q in (conv.weight_quantizer, conv.input_quantizer):
        with torch.no_grad():
            getattr(q, name).fill_(-3.0)
        # Clip's scale is the value of one code, clip_value / (2^b - 1).
        per_code = q.code_range[1] if quantizer == 'Clip' else 1
        assert torch.allclose(q.get_scale() * per_code, torch.tensor(bound))
    out = conv(x)
    assert torch.isfinite(out).all()
    qn, qp = conv.input_quantizer.code_range
    codes = conv.input_quantizer.integer_codes(x)
    assert int(codes.min()) >= qn and int(codes.max()) <= qp
    out.pow(2).sum().backward()
    for q in (conv.weight_quantizer, conv.input_quantizer):
        grad = getattr(q, name).grad
        # Straight-through bound: the gradient still reaches the raw parameter.
        assert torch.isfinite(grad).all() and bool((grad != 0).any())
