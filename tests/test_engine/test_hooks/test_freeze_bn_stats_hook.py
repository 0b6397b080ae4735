"""FreezeBNStatsHook: running statistics stop changing at `begin`, affine BN keeps training."""
import pytest
import torch
from mmengine.hooks import Hook

from mmaqd.engine import FreezeBNStatsHook

from .toy_runner import toy_runner


class BNRecorder(Hook):
    def __init__(self):
        self.means, self.weights = {}, {}

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.means[runner.iter] = runner.model.bn.running_mean.clone()
        self.weights[runner.iter] = runner.model.bn.weight.detach().clone()


def test_statistics_freeze_from_begin(tmp_path):
    recorder = BNRecorder()
    toy_runner(str(tmp_path), 5, [FreezeBNStatsHook(begin=3), recorder]).train()
    assert not torch.equal(recorder.means[1], recorder.means[2])  # still updating
    assert torch.equal(recorder.means[2], recorder.means[3])  # frozen from iter 3
    assert torch.equal(recorder.means[3], recorder.means[4])
    assert not torch.equal(recorder.weights[3], recorder.weights[4])  # gamma still learns


@pytest.mark.parametrize('begin', [-1, 1.5, None, True])
def test_bad_begin_is_refused(begin):
    with pytest.raises(ValueError, match=f'begin={begin!r} is invalid'):
        FreezeBNStatsHook(begin=begin)
