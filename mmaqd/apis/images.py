"""Images to run a detector on: the val set's, or generated ones when it is missing."""
import os.path as osp
from typing import List, Optional, Tuple

import numpy as np
import torch
from mmengine.config import Config
from mmengine.runner import Runner
from torch import nn

from mmaqd.datasets import synthetic_digits

#: Side of the example image when the config's test pipeline does not fix a size
#: (the generated digits set's 256 x 256 images).
DEFAULT_SIZE = 256


def generated_images(num: int, size: int, seed: int) -> torch.Tensor:
    """Images of the generated digits set (uint8 values as float, N x 3 x H x W)."""
    rng = np.random.default_rng(seed)
    glyphs, labels = synthetic_digits.load_glyphs(seed)['train']
    photos = synthetic_digits.load_photos()
    images = [synthetic_digits.make_image(rng, glyphs, labels, size, photos,
                                          min_size=min(24, size // 4),
                                          max_size=min(96, size // 2))[0]
              for _ in range(num)]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()


def dataset_images(cfg: Config, model: nn.Module, num: int,
                   split: str = 'val') -> Optional[List[torch.Tensor]]:
    """The first ``num`` preprocessed images of a split (1 x 3 x H x W each, sizes may
    differ), or None if the data is missing.

    ``split`` ``'train'`` reads the training set through the *test* pipeline (no
    augmentation), e.g. to calibrate an export on images that are not evaluated.
    """
    loader_cfg = dict(cfg.val_dataloader)
    if split == 'train':
        dataset = dict(cfg.train_dataloader['dataset'])
        while 'dataset' in dataset:  # dataset wrappers
            dataset = dict(dataset['dataset'])
        dataset.update(pipeline=loader_cfg['dataset']['pipeline'], filter_cfg=None)
        loader_cfg['dataset'] = dataset
    elif split != 'val':
        raise ValueError(f"split must be 'val' or 'train', got {split!r}")
    ann = osp.join(loader_cfg['dataset'].get('data_root', ''),
                   loader_cfg['dataset'].get('ann_file', ''))
    if not osp.isfile(ann):
        return None
    loader_cfg.update(batch_size=1, num_workers=0, persistent_workers=False)
    loader = Runner.build_dataloader(loader_cfg)
    batches = []
    for data in loader:
        batches.append(model.data_preprocessor(data, False)['inputs'])
        if len(batches) == num:
            break
    return batches


def eval_images(cfg: Config, model: nn.Module, num: int, size: int,
                seed: int = 0) -> Tuple[List[torch.Tensor], str]:
    """The first ``num`` preprocessed val images, or generated ones if the data is missing.

    Args:
        cfg (Config): The config (its val dataloader).
        model (nn.Module): The detector (its data preprocessor).
        num (int): Number of images.
        size (int): Side of the generated images.
        seed (int): Seed of the generated images. Defaults to 0.

    Returns:
        tuple: The batches and a description of their source.
    """
    images = dataset_images(cfg, model, num)
    if images is not None:
        return images, 'val images'
    return ([generated_images(num, size, seed) - model.data_preprocessor.mean],
            'generated images (the val data is missing)')


def calibration_images(cfg: Config, model: nn.Module, num: int, size: int,
                       seed: int = 0) -> Tuple[List[torch.Tensor], str]:
    """The first ``num`` preprocessed training images, or generated ones (another seed than
    :func:`eval_images`') if the data is missing."""
    images = dataset_images(cfg, model, num, 'train')
    if images is not None:
        return images, 'training images'
    return ([generated_images(num, size, seed + 1000) - model.data_preprocessor.mean],
            'generated images (the training data is missing)')


def merge_batches(outputs: List[tuple], kind: int) -> List[torch.Tensor]:
    """The per-level tensors of output ``kind`` of every batch, in one list."""
    return [t for per_batch in outputs for t in per_batch[kind]]


def example_shape(cfg: Config) -> Tuple[int, int]:
    """``(H, W)`` from a fixed-size Resize of the test pipeline, else the default size."""
    pipeline = cfg.get('test_dataloader', {}).get('dataset', {}).get('pipeline', [])
    for transform in pipeline:
        scale = transform.get('scale') if transform.get('type') == 'Resize' else None
        if isinstance(scale, int):
            return scale, scale
        if isinstance(scale, (tuple, list)) and len(scale) == 2:
            return int(scale[1]), int(scale[0])  # mmcv's Resize scale is (w, h)
    return DEFAULT_SIZE, DEFAULT_SIZE
