"""Data sets registered in mmdet's registry."""
from .checked_coco_dataset import CheckedCocoDataset

__all__ = ['CheckedCocoDataset']
