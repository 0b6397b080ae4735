"""Calibration under DDP (2 gloo processes): every rank gets the scales of all ranks' data."""
import torch

from mmaqd.engine.hooks.quant_calibration_hook import _all_reduce
from mmaqd.quant import LSQQuantizer
from mmaqd.quant.calibration import ScaleCalibrator, mse_scale
from tests.dist_utils import run_distributed

BATCHES = [torch.tensor([1.0, -2.0, 9.0, 0.5]), torch.tensor([3.0, -7.0])]


def calibrate(batches, reduce_fn=None):
    quantizers = {'mean': LSQQuantizer(4, signed=True), 'max': LSQQuantizer(8, signed=True),
                  'p': LSQQuantizer(3, signed=True), 'mse': LSQQuantizer(2, signed=True)}
    cal = ScaleCalibrator({k: quantizers[k] for k in ('mean', 'max')})
    pct = ScaleCalibrator({'p': quantizers['p']}, rule='percentile', percentile=50)
    mse = ScaleCalibrator({'mse': quantizers['mse']}, rule='mse')
    with cal, pct, mse:
        for x in batches:
            for q in quantizers.values():
                q(x)
    scales = cal.finish(reduce_fn)
    scales.update(pct.finish(reduce_fn))
    scales.update(mse.finish(reduce_fn))
    return {k: v.tolist() for k, v in scales.items()}


def _calibrate_rank(rank):
    return calibrate([BATCHES[rank]], _all_reduce)


def test_two_ranks_get_identical_scales_from_all_data():
    rank0, rank1 = run_distributed(_calibrate_rank, 2)
    assert rank0 == rank1
    alone = calibrate(BATCHES)
    # mean and max rules: exactly the single process that saw both batches
    assert rank0['mean'] == alone['mean'] and rank0['max'] == alone['max']
    # percentile: the mean of the ranks' batch percentiles (medians 0.75... see below)
    per_rank = [torch.quantile(b.abs(), 0.5).item() for b in BATCHES]
    assert abs(rank0['p'][0] - sum(per_rank) / 2 / 3) < 1e-6
    # mse: the mean of the scales each rank finds in its own batch (codes -2..1)
    per_rank = [mse_scale(b.view(1, -1), -2, 1).item() for b in BATCHES]
    assert abs(rank0['mse'][0] - sum(per_rank) / 2) < 1e-6
