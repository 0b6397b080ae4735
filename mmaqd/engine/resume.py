"""Which checkpoint ``--resume`` continues from: the newest complete one in the work dir."""
import glob
import os.path as osp
import zipfile
from typing import Optional

from mmengine.logging import print_log


def is_complete_checkpoint(path: str) -> bool:
    """Whether ``path`` is a whole checkpoint written by ``torch.save``.

    ``torch.save`` writes a zip archive whose directory comes last, so a file cut by
    a kill during the save has none; every member's CRC is checked as well.

    Args:
        path (str): A file path.

    Returns:
        bool: True for a complete torch checkpoint.
    """
    if not osp.isfile(path) or not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            return any(n.endswith('/data.pkl') or n == 'data.pkl' for n in names) and \
                archive.testzip() is None
    except (zipfile.BadZipFile, OSError, EOFError):
        return False


def find_resumable_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint to resume from: the one ``last_checkpoint`` names, if complete.

    Otherwise (a run killed while saving with mmengine's own CheckpointHook, a file
    removed by hand) the newest complete ``*.pth`` in ``work_dir``, with a warning
    that says what was wrong and what is used instead.

    Args:
        work_dir (str): The run's work dir.

    Returns:
        str, optional: A complete checkpoint, or None if there is none (a warning
        says so when ``work_dir`` had a broken one).
    """
    record = osp.join(work_dir, 'last_checkpoint')
    named = None
    if osp.isfile(record):
        with open(record) as f:
            named = f.read().strip() or None
    if named is not None and is_complete_checkpoint(named):
        return named
    candidates = sorted(glob.glob(osp.join(work_dir, '*.pth')), key=osp.getmtime, reverse=True)
    complete = next((c for c in candidates if is_complete_checkpoint(c)), None)
    if named is not None:
        state = 'missing' if not osp.exists(named) else 'incomplete'
        instead = (f'resuming from {complete}, the newest complete checkpoint there'
                   if complete else 'no complete checkpoint is left there')
        print_log(f'last_checkpoint in {work_dir} names {named}, which is {state} (a run '
                  f'killed while saving?): {instead}', logger='current', level=30)
    elif complete is not None:
        print_log(f'{work_dir} has no last_checkpoint: resuming from {complete}, the newest '
                  f'complete checkpoint there', logger='current', level=30)
    return complete
