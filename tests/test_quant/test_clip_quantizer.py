import pytest
import torch

from mmaqd.quant import ClipQuantizer


def make(bits, signed, clip_value, **kwargs):
    quantizer = ClipQuantizer(bits, signed, **kwargs)
    with torch.no_grad():
        quantizer.clip_value.copy_(torch.as_tensor(clip_value, dtype=torch.float32))
    return quantizer


def test_init_clip_value_is_one():
    assert torch.equal(ClipQuantizer(4, False).clip_value, torch.ones(1))
    assert torch.equal(ClipQuantizer(4, True, per_channel=True, num_channels=3).clip_value,
                       torch.ones(3))


def test_unsigned_forward():
    x = torch.tensor([-0.5, 0.1, 0.2, 0.45, 0.9, 1.7])
    # a = 1, n = 3: n * clip(x) = [0, .3, .6, 1.35, 2.7, 3]
    quantizer = ClipQuantizer(2, False)
    assert torch.allclose(quantizer(x), torch.tensor([0, 0, 1, 1, 3, 3]) / 3)
    # a = 2: n * clip(x / 2) = [0, .15, .3, .675, 1.35, 2.55]
    quantizer = make(2, False, [2.0])
    assert torch.allclose(quantizer(x), 2 * torch.tensor([0, 0, 0, 1, 1, 3]) / 3)
    assert torch.equal(quantizer.integer_codes(x), torch.tensor([0, 0, 0, 1, 1, 3],
                                                                dtype=torch.int32))
    assert quantizer.get_scale().item() == pytest.approx(2 / 3)


def test_signed_odd_grid_forward():
    x = torch.tensor([-2.0, -0.5, -0.1, 0.1, 0.5, 2.0])
    # (clip(x) + 1) * n / 2 = [0, .75, 1.35, 1.65, 2.25, 3] -> k = [0, 1, 1, 2, 2, 3]
    quantizer = ClipQuantizer(2, True)
    assert torch.allclose(quantizer(x), torch.tensor([-1, -1 / 3, -1 / 3, 1 / 3, 1 / 3, 1]))
    codes = quantizer.integer_codes(x)
    assert torch.equal(codes, torch.tensor([-3, -1, -1, 1, 1, 3], dtype=torch.int32))
    assert torch.allclose(codes * quantizer.get_scale(), quantizer(x))


@pytest.mark.parametrize('bits', [2, 3, 4, 8])
def test_signed_grid_is_odd_without_zero(bits):
    n = 2**bits - 1
    quantizer = make(bits, True, [1.5])
    x = torch.linspace(-2, 2, 4001)
    codes = quantizer.integer_codes(x)
    assert torch.equal(codes.unique(), torch.arange(-n, n + 1, 2, dtype=torch.int32))
    assert quantizer.code_range == (-n, n)
    levels = quantizer(x).unique()
    assert torch.allclose(levels, 1.5 * torch.arange(-n, n + 1, 2) / n, atol=1e-6)
    assert not (levels == 0).any()


@pytest.mark.parametrize('bits', [2, 3, 4, 8])
def test_unsigned_codes_cover_range(bits):
    n = 2**bits - 1
    quantizer = make(bits, False, [0.7])
    x = torch.linspace(-1, 1, 4001)
    assert torch.equal(quantizer.integer_codes(x).unique(), torch.arange(n + 1,
                                                                         dtype=torch.int32))
    assert torch.equal(quantizer(x), quantizer.integer_codes(x) * quantizer.get_scale())
    assert torch.allclose(quantizer.get_scale(), torch.tensor([0.7 / n]))


def test_weights_are_standardised_with_constant_statistics():
    quantizer = ClipQuantizer.for_weights(2, out_channels=4, per_channel=False, name='w')
    assert quantizer.standardize and quantizer.signed
    w = torch.tensor([-2.0, -1.0, 1.0, 2.0])
    # Standardised: [-1.095, -0.548, 0.548, 1.095] -> k = [0, 1, 2, 3]
    expected = torch.tensor([-1, -1 / 3, 1 / 3, 1])
    assert torch.allclose(quantizer(w), expected)
    assert torch.allclose(quantizer(w * 10 + 5), expected)
    w = w.clone().requires_grad_()
    quantizer(w).sum().backward()
    # Statistics carry no gradient: d/dw = (1/std) * (2/n) * (n/2) inside the clip range.
    inv_std = 1 / torch.tensor([-2.0, -1.0, 1.0, 2.0]).std()
    assert torch.allclose(w.grad, torch.tensor([0.0, 1.0, 1.0, 0.0]) * inv_std)


def test_clip_value_gradient():
    quantizer = make(2, False, [2.0])
    x = torch.tensor([-0.5, 0.1, 0.2, 0.45, 0.9, 1.7, 3.0])
    quantizer(x).sum().backward()
    # x/a = [-.25, .05, .1, .225, .45, .85, 1.5], q = [0, 0, 0, 1, 1, 3, 3]:
    # below -> 0, inside -> q/n - x/a, above -> 1; no gradient scaling.
    expected = (0 - .05) + (0 - .1) + (1 / 3 - .225) + (1 / 3 - .45) + (1 - .85) + 1
    assert quantizer.clip_value.grad.item() == pytest.approx(expected, rel=1e-5)


def test_per_channel_clip_values():
    quantizer = make(2, False, [1.0, 3.0], per_channel=True, num_channels=2)
    x = torch.tensor([[0.5, 2.0], [0.5, 2.0]])
    # Row 0: 3 * [.5, 1] = [1.5 -> 2, 3]; row 1: 3 * [1/6, 2/3] = [.5 -> 0, 2].
    assert torch.allclose(quantizer(x), torch.tensor([[2 / 3, 1.0], [0.0, 2.0]]))
    assert torch.allclose(quantizer.get_scale(), torch.tensor([1 / 3, 1.0]))


def test_set_bits_keeps_clip_value():
    quantizer = make(4, False, [2.0])
    quantizer.set_bits(2)
    assert quantizer.clip_value.item() == 2.0
    assert quantizer.get_scale().item() == pytest.approx(2 / 3)


def test_32_bits_is_identity():
    x = torch.randn(4)
    assert ClipQuantizer(32, True, standardize=True)(x) is x
