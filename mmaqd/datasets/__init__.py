"""Data sets: the checked COCO dataset (registered in mmdet) and the data generators."""
from .checked_coco_dataset import CheckedCocoDataset
from .coco_subset import write_subset

__all__ = ['CheckedCocoDataset', 'write_subset']
