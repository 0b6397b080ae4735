"""CheckpointHook whose saves never leave a work dir without a complete checkpoint."""
import os
import os.path as osp

from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend
from mmengine.hooks import CheckpointHook
from mmdet.registry import HOOKS

#: Suffix of a checkpoint while it is being written (not matched by ``*.pth``).
PARTIAL_SUFFIX = '.partial'


def fsync_path(path: str) -> None:
    """Flush a file (or a folder's entries) to disk.

    Args:
        path (str): A file or a folder.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text_atomically(path: str, text: str) -> None:
    """Replace ``path`` by a file holding ``text``, never leaving it half written.

    Args:
        path (str): Destination.
        text (str): Content.
    """
    partial = path + PARTIAL_SUFFIX
    with open(partial, 'w') as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)
    fsync_path(osp.dirname(osp.abspath(path)))


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """mmengine's :class:`CheckpointHook` with crash-safe saving, same arguments.

    mmengine 0.10.7 removes the oldest kept checkpoint *before* writing the new one,
    and writes it in place: with ``max_keep_ckpts=1`` a kill or an out-of-memory
    during the save (the memory peak of a run) leaves no complete checkpoint and a
    ``last_checkpoint`` naming a missing or cut file. This hook writes the
    checkpoint under ``NAME.pth.partial`` in the same folder, flushes it to disk,
    renames it to ``NAME.pth`` (atomic on one file system), then updates
    ``last_checkpoint`` the same way, and only then removes the checkpoints that
    ``max_keep_ckpts`` no longer keeps. At every moment the work dir holds a
    complete checkpoint that ``last_checkpoint`` names.

    Checkpoints on another storage backend (``backend_args``) are saved as
    :class:`CheckpointHook` saves them.
    """

    def _save_checkpoint_with_step(self, runner, step: int, meta: dict) -> None:
        if not isinstance(self.file_backend, LocalBackend):
            super()._save_checkpoint_with_step(runner, step, meta)
            return
        outdated = []
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids
                                            and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                outdated.append(self.keep_ckpt_ids.popleft())
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))

        filename = self.filename_tmpl.format(step)
        self.last_ckpt = osp.join(self.out_dir, filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        # Every rank takes part (sharded states); mmengine writes on the main process.
        runner.save_checkpoint(self.out_dir, filename + PARTIAL_SUFFIX, self.file_client_args,
                               save_optimizer=self.save_optimizer,
                               save_param_scheduler=self.save_param_scheduler, meta=meta,
                               by_epoch=self.by_epoch, backend_args=self.backend_args,
                               **self.args)
        if not is_main_process():
            return
        partial = self.last_ckpt + PARTIAL_SUFFIX
        fsync_path(partial)
        os.replace(partial, self.last_ckpt)
        fsync_path(self.out_dir)
        write_text_atomically(osp.join(runner.work_dir, 'last_checkpoint'), self.last_ckpt)
        for old in outdated:
            path = osp.join(self.out_dir, self.filename_tmpl.format(old))
            if osp.isfile(path):
                os.remove(path)
