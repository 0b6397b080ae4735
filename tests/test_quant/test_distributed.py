"""LSQ's first-batch initialisation under DDP: every rank starts from the same step."""
import math

import torch

from mmaqd.quant import LSQQuantizer
from mmaqd.quant.distributed import sum_over_processes, world_size
from tests.dist_utils import run_distributed

INPUTS = [torch.tensor([1.0, -3.0, 2.0, 6.0]), torch.tensor([-10.0, 2.0])]


def _init_on_rank(rank):
    q = LSQQuantizer.for_activations(4, signed=True, name='x').train()
    x = INPUTS[rank].clone().requires_grad_()
    q(x).sum().backward()
    weights = LSQQuantizer.for_weights(4, 1, False, name='w').train()
    weights(INPUTS[rank])  # a weight quantizer keeps its own statistics
    return (q.step.detach().clone(), q.step.grad.clone(), weights.step.detach().clone(),
            sum_over_processes(torch.tensor([float(rank + 1)])))


def test_lsq_first_batch_step_is_averaged_over_ranks():
    (step0, grad0, w_step0, mean0), (step1, grad1, w_step1, mean1) = run_distributed(
        _init_on_rank, 2)
    # mean|x| of all 6 elements of both ranks is 24 / 6 = 4 (the ranks' own means are
    # 3 and 6: their average, 4.5, would be wrong); Qp = 7 for signed 4-bit codes
    step = 2 * 4.0 / math.sqrt(7)
    assert torch.equal(step0, step1)
    assert abs(step0.item() - step) < 1e-6
    assert abs(w_step0.item() - 2 * 3.0 / math.sqrt(7)) < 1e-6
    assert abs(w_step1.item() - 2 * 6.0 / math.sqrt(7)) < 1e-6
    assert mean0.item() == mean1.item() == 3.0
    # step gradient sum(q - x/s) (clamped codes: Qn or Qp) times g = 1/sqrt(N_global * Qp),
    # with N = this rank's numel x 2 processes
    for x, grad in zip(INPUTS, (grad0, grad1)):
        codes = torch.clamp(torch.round(x / step), -8, 7)
        inside = (x / step > -8) & (x / step < 7)
        local = torch.where(inside, codes - x / step, codes).sum()
        g = 1 / math.sqrt(x.numel() * 2 * 7)
        assert abs(grad.item() - (local * g).item()) < 1e-5


def test_without_process_group_nothing_is_reduced():
    assert world_size() == 1
    q = LSQQuantizer.for_activations(4, signed=True, name='x').train()
    x = INPUTS[1].clone().requires_grad_()
    q(x).sum().backward()
    step = 2 * 6.0 / math.sqrt(7)
    assert abs(q.step.item() - step) < 1e-6
    # g = 1 / sqrt(N * Qp) with this process's N = 2 elements only
    codes = torch.clamp(torch.round(x.detach() / step), -8, 7)
    inside = (x.detach() / step > -8) & (x.detach() / step < 7)
    local = torch.where(inside, codes - x.detach() / step, codes).sum()
    assert abs(q.step.grad.item() - (local / math.sqrt(2 * 7)).item()) < 1e-6
