"""Sync BN on CPU (gloo): k processes with batch b compute what one process with k*b does."""
import pytest
import torch
from torch import nn

import mmaqd.quant.sync_bn as sync_bn
from mmaqd.quant import MultiLevelBN, QBN, SyncMultiLevelBN, SyncQBN
from tests.dist_utils import run_distributed

WORLD = 2


def _batch():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 5, 5, generator=gen) * 4 + 2
    weight = torch.randn(4, 3, 5, 5, generator=gen)
    return x, weight


def _init(bn):
    with torch.no_grad():
        for level, sub in enumerate(bn.bns):
            sub.weight.copy_(torch.tensor([0.5, 1.5, -2.0]) + level)
            sub.bias.copy_(torch.tensor([0.1, -0.3, 2.0]))
    return bn.train()


def _run(bn, x, weight):
    x = x.clone().requires_grad_()
    out = bn(x, level=1)
    (out * weight).sum().backward()
    sub = bn.bns[1]
    return dict(out=out.detach(), x_grad=x.grad, w_grad=sub.weight.grad,
                b_grad=sub.bias.grad, mean=sub.running_mean.clone(),
                var=sub.running_var.clone(), level0_mean=bn.bns[0].running_mean.clone())


def _rank_half(rank):
    x, weight = _batch()
    part = slice(2 * rank, 2 * rank + 2)
    return _run(_init(SyncMultiLevelBN(3, num_levels=2)), x[part], weight[part])


def test_two_processes_equal_one_process_with_the_whole_batch():
    ranks = run_distributed(_rank_half, WORLD)
    x, weight = _batch()
    alone = _run(_init(MultiLevelBN(3, num_levels=2)), x, weight)

    def close(a, b):
        return torch.allclose(a, b, rtol=1e-5, atol=1e-5)

    assert close(torch.cat([r['out'] for r in ranks]), alone['out'])
    # the input gradient includes the other rank's share through the batch statistics
    assert close(torch.cat([r['x_grad'] for r in ranks]), alone['x_grad'])
    # parameter gradients are per-rank sums; DDP averages them (the loss is a sum here)
    assert close(ranks[0]['w_grad'] + ranks[1]['w_grad'], alone['w_grad'])
    assert close(ranks[0]['b_grad'] + ranks[1]['b_grad'], alone['b_grad'])
    for r in ranks:
        assert close(r['mean'], alone['mean']) and close(r['var'], alone['var'])
        assert torch.equal(r['level0_mean'], torch.zeros(3))
    # a plain BN per rank would see only half the batch: the test can tell the difference
    half = _run(_init(MultiLevelBN(3, num_levels=2)), x[:2], weight[:2])
    assert not close(half['out'], alone['out'][:2])


def _qbn(cls, simulate):
    bn = cls(3, simulate_bias_rounding=simulate).train()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([0.5, 1.5, -2.0]))
        bn.bias.copy_(torch.tensor([0.1, -0.3, 2.0]))
    if simulate:
        bn.set_input_unit(0.25)
    return bn


def _qbn_rank(rank, simulate):
    x, weight = _batch()
    part = slice(2 * rank, 2 * rank + 2)
    bn = _qbn(SyncQBN, simulate)
    xs = x[part].clone().requires_grad_()
    out = bn(xs)
    (out * weight[part]).sum().backward()
    return out.detach(), xs.grad, bn.running_var.clone()


@pytest.mark.parametrize('simulate', [False, True])
def test_sync_qbn_with_and_without_bias_rounding(simulate):
    ranks = run_distributed(_qbn_rank, WORLD, simulate)
    x, weight = _batch()
    bn = _qbn(QBN, simulate)
    xs = x.clone().requires_grad_()
    out = bn(xs)
    (out * weight).sum().backward()
    assert torch.allclose(torch.cat([r[0] for r in ranks]), out.detach(), atol=1e-5)
    assert torch.allclose(torch.cat([r[1] for r in ranks]), xs.grad, atol=1e-5)
    assert torch.allclose(ranks[1][2], bn.running_var, rtol=1e-5)


def test_sync_path_formula_matches_batchnorm(monkeypatch):
    """The synchronised code path in one process (all-reduce stubbed) equals BatchNorm2d."""
    monkeypatch.setattr(sync_bn, 'world_size', lambda: 2)
    monkeypatch.setattr(sync_bn, 'global_batch_moments', QBN.batch_moments.__get__(QBN(3)))
    x, weight = _batch()
    ours, ref = SyncQBN(3, momentum=0.3).train(), nn.BatchNorm2d(3, momentum=0.3).train()
    assert ours.synchronised()
    outs = []
    for bn in (ours, ref):
        xs = x.clone().requires_grad_()
        out = bn(xs)
        (out * weight).sum().backward()
        outs.append((out.detach(), xs.grad, bn.running_mean, bn.running_var))
    for a, b in zip(*outs):
        assert torch.allclose(a, b, atol=1e-5)
    ours.eval()
    assert not ours.synchronised()
