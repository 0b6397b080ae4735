"""mmaqd's weights-only checkpoint loader, as reached through mmengine."""
import builtins
import io
import pickle
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer, MessageHub
from mmengine.runner.checkpoint import _load_checkpoint

from mmaqd.engine.checkpoint_loading import UnsafeCheckpointError


def mmengine_like_checkpoint(path: str) -> None:
    """What mmengine's Runner saves: tensors plus the message hub and numpy values."""
    hub = MessageHub('ckpt_test_hub')
    hub.update_scalar('train/loss', 0.5)
    hub.update_scalar('train/lr', np.float64(0.01))
    hub.update_info('iter', 7)
    hub.update_info('stats', np.arange(3, dtype=np.float32))
    torch.save({
        'meta': {'seed': np.int64(1), 'iter': 7, 'dataset_meta': {'classes': ('a', 'b')}},
        'state_dict': {'w': torch.ones(2)},
        'message_hub': hub.state_dict(),
    }, path)


def test_mmengine_checkpoint_loads_weights_only(tmp_path):
    path = str(tmp_path / 'ok.pth')
    mmengine_like_checkpoint(path)
    # torch's own default (weights_only=True, no allow-list) refuses this file: this
    # is the failure mmaqd's loader fixes.
    with pytest.raises(Exception, match='Weights only load failed'):
        torch.load(path)
    ckpt = _load_checkpoint(path, map_location='cpu')
    assert torch.equal(ckpt['state_dict']['w'], torch.ones(2))
    assert ckpt['meta']['seed'] == 1
    hub = ckpt['message_hub']
    assert hub['log_scalars']['train/loss'].mean() == 0.5
    np.testing.assert_array_equal(hub['runtime_info']['stats'], [0., 1., 2.])


class _CreatesFile:
    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (builtins.open, (self.target, 'w'))


def test_checkpoint_that_would_run_code_is_refused(tmp_path):
    target = tmp_path / 'pwned.txt'
    path = str(tmp_path / 'evil.pth')
    torch.save({'state_dict': {}, 'payload': _CreatesFile(str(target))}, path)
    with pytest.raises(UnsafeCheckpointError, match=r'builtins\.open|io\.open') as err:
        _load_checkpoint(path, map_location='cpu')
    assert 'evil.pth' in str(err.value) and 'arbitrary code' in str(err.value)
    assert not target.exists()


class _AbusesGetattr:
    def __reduce__(self):
        # HistoryBuffer itself is allowed; reaching its other attributes is not.
        return (getattr, (HistoryBuffer, '__init__'))


def test_getattr_is_limited_to_history_buffer_statistics(tmp_path):
    path = str(tmp_path / 'getattr.pth')
    buf = io.BytesIO()
    torch.save({'x': _AbusesGetattr()}, buf)
    with open(path, 'wb') as f:
        f.write(buf.getvalue())
    with pytest.raises(UnsafeCheckpointError, match='getattr.pth'):
        _load_checkpoint(path, map_location='cpu')


def test_missing_and_truncated_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match='absent.pth'):
        _load_checkpoint(str(tmp_path / 'absent.pth'))
    good = str(tmp_path / 'good.pth')
    mmengine_like_checkpoint(good)
    with open(good, 'rb') as f:
        data = f.read()
    truncated = str(tmp_path / 'truncated.pth')
    with open(truncated, 'wb') as f:
        f.write(data[:len(data) // 2])
    with pytest.raises(RuntimeError, match='truncated.pth.*truncated or not a torch'):
        _load_checkpoint(truncated)
    assert osp.getsize(good) == len(data)


@pytest.mark.parametrize('protocol', [2, 4, 5])
def test_plain_pickle_that_would_run_code_is_called_unsafe(tmp_path, protocol):
    """Not torch.save's zip: the weights-only unpickler stops before the global (FRAME)."""
    target = tmp_path / 'pwned.txt'
    path = str(tmp_path / 'plain.pth')
    with open(path, 'wb') as f:
        pickle.dump({'state_dict': _CreatesFile(str(target))}, f, protocol=protocol)
    with pytest.raises(UnsafeCheckpointError,
                       match=r"plain\.pth'.*(builtins|io)\.open.*arbitrary code"):
        _load_checkpoint(path, map_location='cpu')
    assert not target.exists()
    # a plain pickle of harmless data is still only "not a torch checkpoint"
    with open(path, 'wb') as f:
        pickle.dump({'state_dict': {'w': [1.0, 2.0]}}, f, protocol=protocol)
    with pytest.raises(RuntimeError) as err:
        _load_checkpoint(path, map_location='cpu')
    assert not isinstance(err.value, UnsafeCheckpointError)
