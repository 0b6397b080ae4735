"""The two collective helpers the quantization core needs under DDP (plain torch.distributed)."""
import torch
import torch.distributed as dist


def world_size() -> int:
    """Size of the default process group, or 1 when none is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


@torch.no_grad()
def sum_over_processes(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of ``tensor`` over all processes (itself without a process group).

    Every process must call it, in the same order.

    Args:
        tensor (Tensor): A tensor of the same shape on every process.

    Returns:
        Tensor: The element-wise sum (``tensor`` itself with one process).
    """
    if world_size() == 1:
        return tensor
    tensor = tensor.clone()
    dist.all_reduce(tensor)
    return tensor
