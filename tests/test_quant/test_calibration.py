"""ScaleCalibrator: each rule against hand-computed scales, batches, cross-process reduction."""
import math

import pytest
import torch

from mmaqd.quant import ClipQuantizer, LSQQuantizer, MinMaxQuantizer
from mmaqd.quant.calibration import ScaleCalibrator, mse_scale


def feed(quantizer, *batches):
    for x in batches:
        quantizer(x)


def test_mean_rule_over_batches_weights_by_element_count():
    q = LSQQuantizer(4, signed=False)  # Qp = 15
    with ScaleCalibrator({'q': q}) as cal:
        feed(q, torch.tensor([1.0, -2.0, 3.0]), torch.tensor([4.0]))
        # after the first batch the step is already set from it: 2 * 2 / sqrt(15)
    scales = cal.finish()
    expected = 2 * (10 / 4) / math.sqrt(15)
    assert scales['q'].item() == pytest.approx(expected, rel=1e-6)
    assert q.step.item() == pytest.approx(expected, rel=1e-6) and bool(q.initialized)


def test_step_is_set_from_the_data_before_the_first_quantization():
    q = LSQQuantizer(2, signed=False)  # Qp = 3
    seen = []
    with ScaleCalibrator({'q': q}):
        out = q(torch.tensor([0.5, 1.5]))
        seen.append(q.step.item())
    assert seen[0] == pytest.approx(2 * 1.0 / math.sqrt(3))
    # quantized with that step, not with LSQ's own first-batch rule (same here) or 1.0
    assert torch.allclose(out, torch.round(torch.tensor([0.5, 1.5]) / seen[0]) * seen[0])


def test_eight_bit_quantizers_use_the_max_rule_and_per_channel_weights_per_row():
    w = torch.tensor([[1.0, -5.0], [0.5, 0.25]]).view(2, 2, 1, 1)
    q = LSQQuantizer(8, signed=True, per_channel=True, num_channels=2)  # Qp = 127
    with ScaleCalibrator({'w': q}) as cal:
        q(w)
    scales = cal.finish()
    assert torch.allclose(scales['w'], torch.tensor([0.8 * 5 / 127, 0.8 * 0.5 / 127]))
    q4 = LSQQuantizer(4, signed=True, per_channel=True, num_channels=2)  # Qp = 7
    with ScaleCalibrator({'w': q4}, eight_bit_rule='max') as cal:
        q4(w)
    assert torch.allclose(cal.finish()['w'],
                          torch.tensor([2 * 3.0 / math.sqrt(7), 2 * 0.375 / math.sqrt(7)]))


def test_percentile_rule_averages_batch_percentiles():
    q = LSQQuantizer(3, signed=False)  # Qp = 7
    with ScaleCalibrator({'q': q}, rule='percentile', percentile=50) as cal:
        feed(q, torch.arange(0, 101).float(), torch.arange(0, 11).float())
    assert cal.finish()['q'].item() == pytest.approx((50 + 5) / 2 / 7)


def test_reduction_across_processes_equals_one_process_seeing_everything():
    a, b = torch.tensor([1.0, 2.0, 9.0]), torch.tensor([-3.0, 0.5])
    alone = LSQQuantizer(4, signed=True)
    with ScaleCalibrator({'q': alone}) as cal:
        feed(alone, a, b)
    expected = cal.finish()['q']
    # "Rank 1" saw b, this process saw a; an all-reduce stand-in combines them.
    peer = ScaleCalibrator({'q': LSQQuantizer(4, signed=True)})
    with peer:
        peer.quantizers['q'](b)
    peer_values = iter([peer.stats['q'].abs_sum, peer.stats['q'].count,
                        peer.stats['q'].abs_max, peer.stats['q'].batches])

    def all_reduce(t, op):
        other = next(peer_values)
        return t + other if op == 'sum' else torch.maximum(t, other)

    rank0 = LSQQuantizer(4, signed=True)
    with ScaleCalibrator({'q': rank0}) as cal_rank0:
        rank0(a)
    assert torch.allclose(cal_rank0.finish(all_reduce)['q'], expected)
    assert torch.allclose(rank0.step, expected)


def test_clip_quantizer_scale_sets_the_clipping_value_from_standardised_weights():
    w = torch.tensor([1.0, 2.0, 3.0, 6.0])
    q = ClipQuantizer.for_weights(4, 1, False, 'w')  # standardised, odd codes -15..15
    with ScaleCalibrator({'w': q}, rule='max', max_fraction=1.0) as cal:
        q(w)
    cal.finish()
    standardised = (w - w.mean()) / w.std()
    # scale = max / Qp with Qp = n = 15, and the clipping value a = scale * n
    assert q.clip_value.item() == pytest.approx(standardised.abs().max().item())


def test_bad_settings_and_unusable_quantizers_are_refused():
    with pytest.raises(ValueError, match=r"rule='median' is invalid"):
        ScaleCalibrator({}, rule='median')
    with pytest.raises(ValueError, match='max_fraction=0 is invalid'):
        ScaleCalibrator({}, max_fraction=0)
    with pytest.raises(ValueError, match="quantizer 'q' is at 32 bits"):
        ScaleCalibrator({'q': LSQQuantizer(32, signed=False)})
    with pytest.raises(NotImplementedError, match='has no settable scale'):
        MinMaxQuantizer(4, signed=False).set_scale(torch.ones(1))
    cal = ScaleCalibrator({'q': LSQQuantizer(4, signed=False)})
    with pytest.raises(RuntimeError, match="'q' saw no input"):
        cal.finish()


def test_mse_rule_picks_the_step_with_the_least_squared_error():
    # 2-bit unsigned (codes 0..3). Giving the 1s code 1 needs s < 2, and then 9 is
    # clipped to at most 3s < 6 (error > 9); giving them code 0 costs 3 and leaves 9
    # exact at s = 3, the last candidate (max / Qp). LSQ's mean rule: 2 * 3 / sqrt(3).
    q = LSQQuantizer(2, signed=False)
    with ScaleCalibrator({'q': q}, rule='mse') as cal:
        q(torch.tensor([1.0, 1.0, 1.0, 9.0]))
    assert cal.finish()['q'].item() == pytest.approx(3.0)
    assert q.step.item() == pytest.approx(3.0)


def test_mse_rule_uses_the_asymmetric_signed_range_per_channel():
    # 2-bit signed codes -2..1: row 0 is exactly the grid of step 0.5 (its -1 needs
    # code -2); row 1 of step 0.25. A symmetric range would clip the -2 codes.
    w = torch.tensor([[-1.0, -0.5, 0.0, 0.5], [-0.5, -0.25, 0.0, 0.25]]).view(2, 4, 1, 1)
    q = LSQQuantizer(2, signed=True, per_channel=True, num_channels=2)
    with ScaleCalibrator({'w': q}, rule='mse') as cal:
        q(w)
    assert torch.allclose(cal.finish()['w'], torch.tensor([0.5, 0.25]))
    assert torch.equal(q(w), w)


def test_mse_scale_against_a_brute_force_search():
    torch.manual_seed(0)
    rows = torch.randn(3, 500).double()
    got = mse_scale(rows, -2, 1, candidates=40)
    for r in range(3):
        top = rows[r].abs().max().item()
        errors = []
        for k in range(1, 41):
            s = top * k / 40
            errors.append(sum((min(max(round(v / s), -2), 1) * s - v) ** 2
                              for v in rows[r].tolist()))
        assert got[r].item() == pytest.approx(top * (errors.index(min(errors)) + 1) / 40)
    # Gaussian weights: the error-minimising step is well below LSQ's 2 * mean|w|
    assert (got < 2 * rows.abs().mean(1)).all()


def test_mse_rule_samples_are_capped_and_processes_average_their_scales():
    q = LSQQuantizer(2, signed=False)
    cal = ScaleCalibrator({'q': q}, rule='mse', mse_samples=8)
    with cal:
        feed(q, torch.arange(20.0), torch.arange(40.0))
    assert cal.stats['q'].samples.shape == (1, 8)
    local = cal.scale_of('q')

    # Two processes: an all-reduce stand-in adds the other process's count (1) and
    # then its scale (1.0).
    others = iter([1.0, 1.0])

    def all_reduce(t, op):
        assert op == 'sum'
        return t + next(others)

    assert cal.finish(all_reduce)['q'].item() == pytest.approx((local.item() + 1.0) / 2)
