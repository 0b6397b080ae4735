"""Batch statistics of the global batch under DDP, on any device (gloo included).

torch's :class:`~torch.nn.SyncBatchNorm` and mmcv's ``MMSyncBN`` refuse CPU tensors,
so CPU users of ``torchrun`` (gloo) could not synchronise BN at all. Here the
per-channel sums are all-reduced by :class:`AllReduceSum`, whose backward
all-reduces the gradients, so each rank's gradient is that of the BN over the
union of the ranks' batches. (``torch.distributed.nn.functional.all_reduce`` does
the same but is deprecated in torch 2.13.)
"""
from typing import Any, Tuple

import torch
import torch.distributed as dist

from .distributed import world_size
from .qbn import QBN


class AllReduceSum(torch.autograd.Function):
    """Sum a tensor over all processes; the gradient is summed over them as well.

    Every process's loss depends on every process's summand, so the gradient of the
    total loss with respect to one summand is the sum of all processes' gradients.
    """

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        """The sum of ``tensor`` over the processes (a new tensor)."""
        tensor = tensor.clone()
        dist.all_reduce(tensor)
        return tensor

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        """The sum of the processes' gradients of the output."""
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def global_batch_moments(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, int]:
    """Per-channel mean and biased variance of ``x`` over all ranks' batches.

    Two passes (the sums with the element count, then the centred sum of squares)
    so that the result equals the single-process statistics of the concatenated
    batch up to float summation order. Every rank must call it, in the same order;
    a rank may hold an empty batch.

    Args:
        x (Tensor): Input of shape (N, C, *), on any device.

    Returns:
        tuple[Tensor, Tensor, int]: ``mean`` and ``var`` of shape (C,) and the
        number of elements per channel summed over the ranks.

    Raises:
        RuntimeError: Without an initialised process group.
        ValueError: If the global batch is empty.
    """
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError('global_batch_moments needs an initialised process group')
    dims = [0] + list(range(2, x.dim()))
    count = x.new_tensor([x.numel() // max(x.size(1), 1)])
    # one collective for the sums and the count (the count has no gradient)
    totals = AllReduceSum.apply(torch.cat([x.sum(dims), count]))
    n = int(totals[-1].item())
    if n == 0:
        raise ValueError('global_batch_moments: the global batch is empty')
    mean = totals[:-1] / n
    centred = x - mean.view(1, -1, *([1] * (x.dim() - 2)))
    var = AllReduceSum.apply((centred * centred).sum(dims)) / n
    return mean, var, n


class SyncQBN(QBN):
    """:class:`QBN` with the batch statistics of the global batch under DDP.

    In training mode with an initialised process group of more than one rank, the
    mean and variance are those of all ranks' batches together (and the running
    statistics are updated with them), so ``k`` processes with batch ``b`` compute
    what one process with batch ``k*b`` computes. Otherwise, and always in eval mode,
    it is exactly :class:`QBN`. Its state dict is that of :class:`QBN` /
    ``BatchNorm2d``, so checkpoints move freely between the two.

    Usable as mmcv ``norm_cfg=dict(type='SyncQBN')``; unlike
    :class:`torch.nn.SyncBatchNorm` it works with the gloo backend on CPU.

    Args:
        *args, **kwargs: As for :class:`QBN`.
    """

    def batch_moments(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, int]:
        """Per-channel mean, biased variance and count of the global batch (see class)."""
        if not self.synchronised():
            return super().batch_moments(x)
        return global_batch_moments(x)

    def synchronised(self) -> bool:
        """True in training mode under an initialised group of more than one process."""
        return self.training and world_size() > 1
