"""The first images of a COCO annotation file, as a file of their own."""
import json


def write_subset(src: str, dst: str, num: int) -> None:
    """Write a COCO annotation file with the first ``num`` images of ``src`` and their boxes.

    Args:
        src (str): COCO annotation file.
        dst (str): Where to write the subset.
        num (int): Number of images to keep (in file order).
    """
    with open(src) as f:
        coco = json.load(f)
    coco['images'] = coco['images'][:num]
    kept = {img['id'] for img in coco['images']}
    coco['annotations'] = [a for a in coco['annotations'] if a['image_id'] in kept]
    with open(dst, 'w') as f:
        json.dump(coco, f)
