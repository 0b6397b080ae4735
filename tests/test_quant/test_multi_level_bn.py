import pytest
import torch

from mmaqd.quant import MultiLevelBN, SharedLevelBN, SyncMultiLevelBN, SyncQBN


@pytest.mark.parametrize('cls', [MultiLevelBN, SyncMultiLevelBN])
def test_level_isolation(cls):
    torch.manual_seed(0)
    bn = cls(3, num_levels=2).train()
    before = {k: v.clone() for k, v in bn.bns[1].state_dict().items()}
    out = bn(torch.randn(2, 3, 4, 4) * 5 + 3, level=0)
    out.sum().backward()
    for key, value in bn.bns[1].state_dict().items():
        assert torch.equal(value, before[key]), key
    assert bn.bns[1].weight.grad is None
    assert bn.bns[0].num_batches_tracked.item() == 1
    assert (bn.bns[0].running_mean > 0.1).all()


@pytest.mark.parametrize('cls', [MultiLevelBN, SyncMultiLevelBN])
def test_selected_by_index_not_call_order(cls):
    bn = cls(1, num_levels=3, momentum=1.0).train()
    bn(torch.full((2, 1, 2, 2), 7.0) + torch.arange(2.0).view(2, 1, 1, 1), level=2)
    bn(torch.full((2, 1, 2, 2), -1.0) + torch.arange(2.0).view(2, 1, 1, 1), level=0)
    assert torch.allclose(bn.bns[2].running_mean, torch.tensor([7.5]))
    assert torch.allclose(bn.bns[0].running_mean, torch.tensor([-0.5]))
    assert torch.equal(bn.bns[1].running_mean, torch.zeros(1))
    with pytest.raises(IndexError):
        bn(torch.zeros(2, 1, 2, 2), level=3)


@pytest.mark.parametrize('cls', [MultiLevelBN, SyncMultiLevelBN, SharedLevelBN])
def test_state_dict_round_trip(cls):
    torch.manual_seed(0)
    source = cls(3, num_levels=2).train()
    for level in range(2):
        source(torch.randn(2, 3, 4, 4) + level, level=level)
    with torch.no_grad():
        for p in source.parameters():
            p.uniform_(0.5, 1.5)
    target = cls(3, num_levels=2)
    target.load_state_dict(source.state_dict())
    source.eval(), target.eval()
    x = torch.randn(2, 3, 4, 4)
    for level in range(2):
        assert torch.equal(source(x, level), target(x, level))


def test_sync_flavour_has_one_sync_bn_per_level():
    bn = SyncMultiLevelBN(4, num_levels=3, eps=1e-3)
    assert all(type(m) is SyncQBN for m in bn.bns)
    assert bn.bns[2].eps == 1e-3
    # a MultiLevelBN checkpoint loads into the sync flavour and back
    bn.load_state_dict(MultiLevelBN(4, num_levels=3).state_dict())


def test_shared_bn_is_shared_by_levels():
    bn = SharedLevelBN(1, num_levels=2, momentum=1.0).train()
    bn(torch.full((2, 1, 2, 2), 3.0) + torch.arange(2.0).view(2, 1, 1, 1), level=1)
    assert torch.allclose(bn.bn.running_mean, torch.tensor([3.5]))
    bn.eval()
    x = torch.randn(1, 1, 2, 2)
    assert torch.equal(bn(x, 0), bn(x, 1))
    with pytest.raises(IndexError):
        bn(x, 2)
    with pytest.raises(ValueError, match='num_levels'):
        SharedLevelBN(1, num_levels=0)
