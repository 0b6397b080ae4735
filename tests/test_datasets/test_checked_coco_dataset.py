"""CheckedCocoDataset: an empty data set is an error naming the file, not a numpy error."""
import json
import os.path as osp

import pytest

from mmaqd.datasets import CheckedCocoDataset
from tests.test_tools.tiny_data import make_tiny_data


def dataset(root: str, split: str, test_mode: bool = False) -> CheckedCocoDataset:
    return CheckedCocoDataset(data_root=root, ann_file=f'annotations/{split}.json',
                              data_prefix=dict(img=f'{split}/'), test_mode=test_mode,
                              filter_cfg=dict(filter_empty_gt=True, min_size=4),
                              metainfo=dict(classes=tuple(str(d) for d in range(10))),
                              pipeline=[])


def rewrite(path: str, **changes) -> None:
    with open(path) as f:
        content = json.load(f)
    content.update(changes)
    with open(path, 'w') as f:
        json.dump(content, f)


def test_images_without_boxes_and_no_images_are_named(tmp_path):
    root = make_tiny_data(str(tmp_path / 'data'))
    assert len(dataset(root, 'train')) == 4
    train = osp.join(root, 'annotations', 'train.json')
    rewrite(train, annotations=[])
    with pytest.raises(ValueError, match=r"CheckedCocoDataset: '.*train\.json' gives no image to "
                                         r"train on: filter_cfg=.*removed all of its 4 images "
                                         r'\(0 boxes in all'):
        dataset(root, 'train')
    rewrite(osp.join(root, 'annotations', 'val.json'), images=[], annotations=[])
    with pytest.raises(ValueError, match=r"val\.json' gives no image to test on: it lists no "
                                         r'image'):
        dataset(root, 'val', test_mode=True)
