"""A tiny generated data set and the config options that point a run at it."""
from mmaqd.datasets.synthetic_digits import generate


def make_tiny_data(out: str, size: int = 128) -> str:
    """Generate 4 train and 2 val images (``size`` square) of the digits set under ``out``."""
    generate(out, num_train=4, num_val=2, size=size, seed=0, min_size=24,
                       max_size=48)
    return out


def data_options(root: str, batch_size: int = 2) -> list:
    """``--cfg-options`` that make a synthetic-digits config use the data in ``root``.

    Args:
        root (str): Folder made by :func:`make_tiny_data`.
        batch_size (int): Training batch size (per process). Defaults to 2.

    Returns:
        list[str]: ``key=value`` options.
    """
    root = root + '/'
    opts = [
        f'train_dataloader.dataset.data_root={root}', f'train_dataloader.batch_size={batch_size}',
        'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
        f'val_evaluator.ann_file={root}annotations/val.json',
        f'test_evaluator.ann_file={root}annotations/val.json',
        'default_hooks.logger.interval=1', 'randomness.seed=0',
        # after 2 iterations no score passes the usual 0.05; keep every box
        'model.test_cfg.score_thr=0.0',
    ]
    for loader in ('val_dataloader', 'test_dataloader'):
        opts += [f'{loader}.dataset.data_root={root}', f'{loader}.batch_size=2',
                 f'{loader}.num_workers=0', f'{loader}.persistent_workers=False']
    return opts
