import pytest
import torch

from mmaqd.quant import MinMaxQuantizer


def test_unsigned_tracks_ema_range():
    quantizer = MinMaxQuantizer(4, False, averaging_constant=0.5)
    quantizer(torch.tensor([0.0, 1.0, 2.0, 3.0]))
    assert quantizer.observer.max_val.item() == pytest.approx(3.0)
    assert quantizer.get_scale().item() == pytest.approx(3 / 15)
    out = quantizer(torch.tensor([0.0, 5.0, 2.1]))
    # max = 3 + 0.5 * (5 - 3) = 4; min stays 0 -> scale 4/15, zero point 0.
    assert quantizer.observer.min_val.item() == 0.0
    assert quantizer.observer.max_val.item() == pytest.approx(4.0)
    assert quantizer.get_scale().item() == pytest.approx(4 / 15)
    assert quantizer.get_zero_point().item() == 0
    # 5 / (4/15) = 18.75 -> clamped to 15; 2.1 / (4/15) = 7.875 -> 8.
    assert torch.allclose(out, torch.tensor([0.0, 4.0, 8 * 4 / 15]))


def test_min_range_includes_zero():
    quantizer = MinMaxQuantizer(2, False, averaging_constant=1.0)
    quantizer(torch.tensor([1.0, 3.0]))
    assert quantizer.get_scale().item() == pytest.approx(1.0)  # (3 - 0) / 3


def test_signed_symmetric_per_channel():
    quantizer = MinMaxQuantizer(4, True, per_channel=True, num_channels=2)
    w = torch.tensor([[1.0, -0.5], [0.2, 0.4]])
    out = quantizer(w)
    # scale = max|w| / 7.5 per row: 1/7.5 and 0.4/7.5; the maximum maps to 7.5 -> 7.
    assert torch.allclose(quantizer.get_scale(), torch.tensor([1 / 7.5, 0.4 / 7.5]))
    assert torch.equal(quantizer.get_zero_point(), torch.zeros(2, dtype=torch.int32))
    expected_codes = torch.tensor([[7, -4], [4, 7]])
    assert torch.allclose(out, expected_codes * quantizer.get_scale()[:, None])
    assert torch.equal(quantizer.integer_codes(w), expected_codes.to(torch.int32))


def test_eval_freezes_range():
    quantizer = MinMaxQuantizer(8, False)
    quantizer(torch.tensor([0.0, 2.0]))
    quantizer.eval()
    out = quantizer(torch.tensor([0.0, 100.0]))
    assert quantizer.observer.max_val.item() == pytest.approx(2.0)
    assert out[1].item() == pytest.approx(2.0)
    quantizer.train()
    quantizer(torch.tensor([0.0, 100.0]))
    assert quantizer.observer.max_val.item() > 2.0


@pytest.mark.parametrize('bits', [2, 3, 4, 8])
def test_low_bits_use_custom_range(bits):
    unsigned = MinMaxQuantizer(bits, False)
    assert (unsigned.observer.quant_min, unsigned.observer.quant_max) == (0, 2**bits - 1)
    x = torch.linspace(0, 1, 1001)
    unsigned(x)
    assert torch.equal(
        unsigned.integer_codes(x).unique(), torch.arange(2**bits, dtype=torch.int32))
    signed = MinMaxQuantizer(bits, True)
    assert (signed.observer.quant_min, signed.observer.quant_max) == (-2**(bits - 1),
                                                                      2**(bits - 1) - 1)
    x = torch.linspace(-1, 1, 1001)
    signed(x)
    codes = signed.integer_codes(x)
    assert codes.max() == 2**(bits - 1) - 1
    assert codes.min() >= -2**(bits - 1)
    assert codes.unique().numel() >= 2**bits - 1


def test_set_bits_recomputes_scale():
    quantizer = MinMaxQuantizer(4, False, averaging_constant=1.0)
    quantizer(torch.tensor([0.0, 4.0]))
    quantizer.eval()
    quantizer.set_bits(2)
    assert (quantizer.observer.quant_min, quantizer.observer.quant_max) == (0, 3)
    assert quantizer.get_scale().item() == pytest.approx(4 / 3)
    assert torch.allclose(quantizer(torch.tensor([1.0, 2.5])), torch.tensor([4 / 3, 8 / 3]))


def test_32_bits_is_identity_and_can_be_switched_on():
    quantizer = MinMaxQuantizer(32, False)
    x = torch.tensor([0.0, 1.0, 3.0])
    assert quantizer(x) is x
    quantizer.set_bits(2)
    assert torch.allclose(quantizer(x), x)
    assert quantizer.get_scale().item() == pytest.approx(1.0)


def test_codes_times_scale_equal_forward():
    torch.manual_seed(0)
    quantizer = MinMaxQuantizer(3, False)
    x = torch.rand(2, 3, 4, 4) * 3
    out = quantizer(x)
    assert torch.allclose(quantizer.integer_codes(x) * quantizer.get_scale(), out)


def test_restoring_bits_without_adapting_still_switches_the_code_range():
    q = MinMaxQuantizer(2, False)
    q.set_bits(4, adapt=False)
    assert (q.fake_quant.quant_min, q.fake_quant.quant_max) == (0, 15)
    assert (q.observer.quant_min, q.observer.quant_max) == (0, 15)
    q.train()
    out = q(torch.linspace(0, 1, 101))
    assert len(out.unique()) == 16
