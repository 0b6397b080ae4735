"""Run mmengine's distributed launchers (torchrun / dist_train.sh) on CPU-only machines.

mmengine 0.10.7's ``pytorch`` launcher calls ``torch.cuda.set_device`` and its
runner wraps the model in DDP with ``device_ids=[LOCAL_RANK]``; both fail without
CUDA. On such a machine :func:`prepare_cpu_distributed` initialises the process
group from torchrun's environment with the gloo backend (mmengine then finds it
initialised and skips its own call) and wraps the model with ``device_ids=None``,
as torch's DDP expects for CPU modules. The launcher stays torchrun's; nothing
changes when CUDA is available. :func:`cpu_distributed` also leaves the group at
the end: a gloo group still alive at interpreter exit aborts the process
("terminate called without an active exception"), failing a finished run.
"""
import os
from contextlib import contextmanager
from datetime import timedelta
from typing import Iterator

import torch
import torch.distributed as dist
from mmengine.config import Config

CPU_BACKEND = 'gloo'


def prepare_cpu_distributed(cfg: Config) -> bool:
    """Adapt a distributed run's config to a CPU-only machine, and join the group.

    Args:
        cfg (Config): The run's config, with ``cfg.launcher`` set.

    Returns:
        bool: True if the config was adapted (distributed, no CUDA), else False.

    Raises:
        ValueError: For settings that cannot work on CPU: a launcher other than
            ``pytorch``, another backend than gloo, or ``cfg.sync_bn`` (torch's and
            mmcv's SyncBatchNorm need CUDA).
    """
    launcher = cfg.get('launcher', 'none')
    if launcher == 'none' or torch.cuda.is_available():
        return False
    if launcher != 'pytorch':
        raise ValueError(f'launcher {launcher!r} on a machine without CUDA: mmaqd supports '
                         f"only 'pytorch' (torchrun, tools/dist_train.sh) there")
    if cfg.get('sync_bn') is not None:
        raise ValueError(f'sync_bn={cfg.sync_bn!r} converts BNs to torch/mmcv SyncBatchNorm, '
                         f"which need CUDA; on CPU use norm_cfg=dict(type='SyncQBN') in the "
                         f"backbone and neck and norm_cfg=dict(type='SyncMultiLevelBN') in "
                         f'the head')
    env_cfg = cfg.setdefault('env_cfg', {})
    dist_cfg = dict(env_cfg.get('dist_cfg') or {})
    backend = dist_cfg.pop('backend', 'nccl')
    if backend == 'nccl':
        backend = CPU_BACKEND
    if backend != CPU_BACKEND:
        raise ValueError(f'env_cfg.dist_cfg.backend={backend!r} on a machine without CUDA: '
                         f'use {CPU_BACKEND!r}')
    env_cfg['dist_cfg'] = dict(dist_cfg, backend=backend)
    wrapper = dict(cfg.get('model_wrapper_cfg') or dict(
        type='MMDistributedDataParallel',
        broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False)))
    wrapper.setdefault('device_ids', None)
    cfg.model_wrapper_cfg = wrapper
    if not dist.is_initialized():
        os.environ.setdefault('LOCAL_RANK', os.environ.get('RANK', '0'))
        timeout = dist_cfg.get('timeout')
        dist.init_process_group(
            backend=backend,
            **({} if timeout is None else dict(timeout=timedelta(seconds=timeout))))
    return True


@contextmanager
def cpu_distributed(cfg: Config) -> Iterator[bool]:
    """:func:`prepare_cpu_distributed`, and destroy the process group it joined on exit.

    Args:
        cfg (Config): The run's config, with ``cfg.launcher`` set.

    Yields:
        bool: Whether the config was adapted for CPU.
    """
    joined_before = dist.is_available() and dist.is_initialized()
    adapted = prepare_cpu_distributed(cfg)
    completed = False
    try:
        yield adapted
        completed = True
    finally:
        if adapted and not joined_before and dist.is_initialized():
            if completed:
                # All ranks leave together: rank 0 hosts the rendezvous store, and a rank
                # that tears it down while another still uses it can abort at exit
                # ("terminate called without an active exception", seen once in CI).
                dist.barrier()
            dist.destroy_process_group()
