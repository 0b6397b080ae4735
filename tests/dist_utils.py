"""Run a function in several gloo processes on this machine (for DDP tests on CPU)."""
import socket
from typing import Any, Callable

import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, fn: Callable, args: tuple,
            results: Any) -> None:
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank,
                            world_size=world_size)
    try:
        results[rank] = fn(rank, *args)
    finally:
        dist.destroy_process_group()


def run_distributed(fn: Callable, world_size: int, *args) -> list:
    """Call ``fn(rank, *args)`` in ``world_size`` gloo processes and gather the results.

    Args:
        fn (callable): A module-level function (it is pickled); its result must be
            picklable.
        world_size (int): Number of processes.
        *args: Passed to ``fn`` after the rank.

    Returns:
        list: ``fn``'s result of each rank, by rank.
    """
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_worker, args=(world_size, free_port(), fn, args, results), nprocs=world_size,
                 join=True)
        return [results[rank] for rank in range(world_size)]
