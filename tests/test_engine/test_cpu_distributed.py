"""prepare_cpu_distributed: what it changes in a config, and what it refuses."""
import pytest
import torch
from mmengine.config import Config

from mmaqd.engine.cpu_distributed import cpu_distributed, prepare_cpu_distributed

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason='CPU-only behaviour')


def _cfg(**kwargs):
    base = dict(launcher='pytorch', env_cfg=dict(dist_cfg=dict(backend='nccl')))
    base.update(kwargs)
    return Config(base)


def test_single_process_runs_are_left_alone():
    cfg = _cfg(launcher='none')
    assert prepare_cpu_distributed(cfg) is False
    assert cfg.env_cfg.dist_cfg.backend == 'nccl' and 'model_wrapper_cfg' not in cfg


@pytest.mark.parametrize('kwargs, message', [
    (dict(launcher='slurm'), r"launcher 'slurm' .* only 'pytorch'"),
    (dict(sync_bn='torch'), r"sync_bn='torch' .* need CUDA; on CPU use .*SyncQBN"),
    (dict(env_cfg=dict(dist_cfg=dict(backend='mpi'))), r"backend='mpi' .* use 'gloo'"),
])
def test_settings_that_cannot_work_on_cpu_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        prepare_cpu_distributed(_cfg(**kwargs))


def test_gloo_and_a_cpu_ddp_wrapper(monkeypatch):
    monkeypatch.setenv('LOCAL_RANK', '0')  # restored afterwards: the function may set it
    joined = {}
    monkeypatch.setattr(torch.distributed, 'is_initialized', lambda: False)
    monkeypatch.setattr(torch.distributed, 'init_process_group',
                        lambda **kw: joined.update(kw))
    cfg = _cfg(env_cfg=dict(dist_cfg=dict(backend='nccl', timeout=60)))
    assert prepare_cpu_distributed(cfg) is True
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert cfg.model_wrapper_cfg.type == 'MMDistributedDataParallel'
    assert cfg.model_wrapper_cfg.device_ids is None
    assert joined['backend'] == 'gloo' and joined['timeout'].total_seconds() == 60


def test_the_group_it_joined_is_left_at_the_end(monkeypatch):
    """A gloo group alive at interpreter exit aborts the finished process (exit -6)."""
    monkeypatch.setenv('LOCAL_RANK', '0')
    state = dict(joined=False, left=0, barriers=0)
    monkeypatch.setattr(torch.distributed, 'is_initialized', lambda: state['joined'])
    monkeypatch.setattr(torch.distributed, 'barrier',
                        lambda: state.update(barriers=state['barriers'] + 1))
    monkeypatch.setattr(torch.distributed, 'init_process_group',
                        lambda **kw: state.update(joined=True))
    monkeypatch.setattr(torch.distributed, 'destroy_process_group',
                        lambda: state.update(joined=False, left=state['left'] + 1))
    with cpu_distributed(_cfg()) as adapted:
        assert adapted and state['joined']
    assert state == dict(joined=False, left=1, barriers=1)  # the ranks leave together
    with pytest.raises(RuntimeError, match='boom'):  # also when the run fails, without
        with cpu_distributed(_cfg()):               # waiting for ranks that may be gone
            raise RuntimeError('boom')
    assert state == dict(joined=False, left=2, barriers=1)
    with cpu_distributed(_cfg(launcher='none')) as adapted:  # single process: nothing
        assert not adapted
    assert state['left'] == 2
