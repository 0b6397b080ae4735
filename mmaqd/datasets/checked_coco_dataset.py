"""mmdet's CocoDataset that refuses to be empty, naming the annotation file."""
from typing import List

from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS


@DATASETS.register_module()
class CheckedCocoDataset(CocoDataset):
    """:class:`CocoDataset` that raises a clear error when nothing is left to load.

    With no image, or (for training, ``filter_cfg=dict(filter_empty_gt=True)``) no
    image with a box, mmengine fails later with "need at least one array to
    concatenate". This dataset says which annotation file, how many images and
    boxes it holds and what the filter removed.
    """

    def filter_data(self) -> List[dict]:
        """Filter as :class:`CocoDataset` does, then refuse an empty result.

        Returns:
            list[dict]: The kept data infos.

        Raises:
            ValueError: If no image is left.
        """
        kept = super().filter_data()
        if not kept:
            images = len(self.data_list)
            boxes = sum(len(info.get('instances', [])) for info in self.data_list)
            why = ('it lists no image' if images == 0 else
                   f'filter_cfg={self.filter_cfg} removed all of its {images} images '
                   f'({boxes} boxes in all; an image without a box is dropped for training)')
            raise ValueError(f'{type(self).__name__}: {self.ann_file!r} gives no image to '
                             f'{"test" if self.test_mode else "train"} on: {why}')
        return kept
