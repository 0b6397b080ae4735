import pytest
import torch
from torch import nn

from mmaqd.quant import fold_batch_norm


def make_bn(gamma, beta, mean, var):
    bn = nn.BatchNorm2d(len(gamma), eps=0.0).eval()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor(gamma))
        bn.bias.copy_(torch.tensor(beta))
        bn.running_mean.copy_(torch.tensor(mean))
        bn.running_var.copy_(torch.tensor(var))
    return bn


def test_fold_against_hand_values():
    # g' = gamma / sqrt(var) = [2 / 2, 0 / 1, -1 / 0.5] = [1, 0, -2]
    bn = make_bn([2.0, 0.0, -1.0], [0.5, 0.7, 0.14], [0.1, 0.3, 0.0], [4.0, 1.0, 0.25])
    folded = fold_batch_norm(bn, 0.1)
    # c = beta / g' - mu = [0.4, (constant: beta) 0.7, -0.07]; c / 0.1 = [4, 7, -0.7]
    assert torch.equal(folded.bias, torch.tensor([4, 7, -1]))
    assert torch.equal(folded.constant, torch.tensor([False, True, False]))
    assert torch.allclose(folded.multiplier, torch.tensor([1.0, 0.0, -2.0], dtype=torch.float64))
    assert folded.unit.dtype == torch.float64 and folded.unit.shape == (1,)
    # the conv bias adds b / S, except to the constant channel, whose input is zeroed
    folded = fold_batch_norm(bn, torch.tensor([0.1, 0.1, 0.05]), torch.tensor([0.2, 5.0, 0.0]))
    # [0.6 / 0.1, 0.7 / 0.1, -0.07 / 0.05] = [6, 7, -1.4]
    assert torch.equal(folded.bias, torch.tensor([6, 7, -1]))


def test_fold_computes_in_float64():
    # mu is float32(0.3333333) = 0.3333333134651184; (beta / g' - mu) / S =
    # (1 / 3 - 0.3333333134651184) / 1e-8 = 1.987 -> 2 in float64, while float32's
    # 1 / 3 (0.3333333432674408) would give 2.980 -> 3
    bn = make_bn([3.0], [1.0], [0.3333333], [1.0])
    assert float(bn.running_mean[0]) == 0.3333333134651184
    assert int(fold_batch_norm(bn, 1e-8).bias) == 2


def test_fold_refusals_name_the_problem():
    with pytest.raises(ValueError, match=r'BatchNorm2d: folding needs running statistics'):
        fold_batch_norm(nn.BatchNorm2d(2, track_running_stats=False), 0.1)
    bn = make_bn([1.0, 1.0], [0.0, 0.0], [0.0, 0.0], [1.0, float('nan')])
    with pytest.raises(ValueError, match=r'BatchNorm2d channel 1: folded bias nan accumulator '
                       r'units does not fit int64'):
        fold_batch_norm(bn, 0.1)
