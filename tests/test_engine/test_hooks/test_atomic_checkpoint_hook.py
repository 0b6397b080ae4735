"""AtomicCheckpointHook: a kill while saving leaves a complete checkpoint to resume from."""
import glob
import os
import os.path as osp
import signal
import subprocess
import sys
import time

import torch

from mmaqd.engine.resume import find_resumable_checkpoint, is_complete_checkpoint
from tests.conftest import ROOT

from .toy_runner import toy_runner

# Trains the toy model with a checkpoint every iteration, keeping one, each padded by
# 256 MB so that writing it takes long enough to be killed in the middle.
TRAIN = """
import sys
import torch
from mmengine.hooks import Hook
from tests.test_engine.test_hooks.toy_runner import toy_runner

class Pad(Hook):
    def before_save_checkpoint(self, runner, checkpoint):
        checkpoint['padding'] = torch.ones(64 * 2**20)

toy_runner(sys.argv[1], 50, [Pad()], ckpt_interval=1, max_keep_ckpts=1,
           checkpoint_hook='AtomicCheckpointHook').train()
"""


def _kill_during_second_save(work_dir: str) -> None:
    proc = subprocess.Popen([sys.executable, '-c', TRAIN, work_dir], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = osp.join(work_dir, 'iter_2.pth.partial')
    deadline = time.monotonic() + 300
    try:
        while not (osp.isfile(partial) and osp.getsize(partial) > 2**20):
            assert proc.poll() is None, 'training ended before its second save'
            assert time.monotonic() < deadline, 'no second save within 300 s'
            time.sleep(0.001)
        proc.send_signal(signal.SIGKILL)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_kill_during_a_save_keeps_the_previous_checkpoint_and_resumes(tmp_path):
    work_dir = str(tmp_path / 'run')
    _kill_during_second_save(work_dir)
    # Killed while iteration 2 was being saved (written or flushed): last_checkpoint
    # names a complete checkpoint, and every *.pth is complete. (mmengine's own hook
    # leaves a cut iter_2.pth and a last_checkpoint naming the removed iter_1.pth.)
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        named = f.read()
    assert named in [osp.join(work_dir, f'iter_{k}.pth') for k in (1, 2)]
    assert is_complete_checkpoint(named)
    saved = glob.glob(osp.join(work_dir, '*.pth'))
    assert saved and all(is_complete_checkpoint(p) for p in saved)

    resume_from = find_resumable_checkpoint(work_dir)
    assert resume_from == named
    toy_runner(work_dir, 3, ckpt_interval=1, max_keep_ckpts=1, resume=True,
               load_from=resume_from, checkpoint_hook='AtomicCheckpointHook').train()
    resumed = torch.load(osp.join(work_dir, 'iter_3.pth'), weights_only=False)
    assert resumed['meta']['iter'] == 3
    # max_keep_ckpts=1: only the newest is left, after it was complete
    assert sorted(osp.basename(p) for p in glob.glob(osp.join(work_dir, '*.pth'))) == [
        'iter_3.pth']


def test_resume_falls_back_to_the_newest_complete_checkpoint(tmp_path, capsys):
    work_dir = str(tmp_path / 'run')
    toy_runner(work_dir, 2, ckpt_interval=1).train()  # iter_1.pth, iter_2.pth
    first, second = (osp.join(work_dir, f'iter_{k}.pth') for k in (1, 2))
    assert find_resumable_checkpoint(work_dir) == second
    # what mmengine's CheckpointHook leaves after a kill: a cut newest file ...
    with open(second, 'rb') as f:
        data = f.read()
    with open(second, 'wb') as f:
        f.write(data[:len(data) // 3])
    os.utime(second, (time.time() + 5, time.time() + 5))
    assert find_resumable_checkpoint(work_dir) == first
    assert f'names {second}, which is incomplete' in capsys.readouterr().out
    # ... or last_checkpoint naming a removed one
    os.remove(second)
    assert find_resumable_checkpoint(work_dir) == first
    assert 'which is missing' in capsys.readouterr().out
    os.remove(first)
    assert find_resumable_checkpoint(work_dir) is None
    assert 'no complete checkpoint is left there' in capsys.readouterr().out
