"""The NEON tree-crown images shipped in the ``deepforest`` wheel, tiled into COCO format.

The wheel carries four annotated aerial RGB images (Pascal-VOC XML, about 950
tree-crown boxes), read straight from the wheel. The two large YELL images are cut
at a horizontal line (top: train, bottom: val, no shared pixel); the small OSBS and
SOAP images go to train. Train tiles overlap; val tiles partition their region. The
CLI is ``tools/dataset_converters/neon_trees.py``; docs/datasets.md describes the set.
"""
import json
import os
import os.path as osp
import subprocess
import sys
import zipfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

DEEPFOREST_VERSION = '2.1.0'
DEFAULT_CACHE = osp.expanduser(os.environ.get('MMAQD_WHEEL_CACHE', '~/.cache/mmaqd/wheels'))
CLASSES = ('Tree', )
# (image stem, split policy); 'split' images are cut into a train top and a val bottom.
SOURCES = (
    ('2019_YELL_2_528000_4978000_image_crop2', 'split'),
    ('2019_YELL_2_541000_4977000_image_crop', 'split'),
    ('OSBS_029', 'train'),
    ('SOAP_061', 'train'),
)


@dataclass
class Region:
    """A rectangle of a source image assigned to one split (pixels [x0, x1) x [y0, y1))."""
    stem: str
    split: str
    x0: int
    y0: int
    x1: int
    y1: int


def find_or_fetch_wheel(wheel: Optional[str], cache_dir: str = DEFAULT_CACHE) -> str:
    """Return the path of the deepforest wheel, downloading it with pip if needed.

    Args:
        wheel (str, optional): An explicit wheel path; used as is when given.
        cache_dir (str): Folder that keeps the downloaded wheel between runs.

    Returns:
        str: Path of a ``deepforest-*.whl`` file.
    """
    if wheel:
        if not osp.isfile(wheel):
            raise FileNotFoundError(f'--wheel {wheel!r} does not exist')
        return wheel
    name = f'deepforest-{DEEPFOREST_VERSION}-py3-none-any.whl'
    path = osp.join(cache_dir, name)
    if not osp.isfile(path):
        os.makedirs(cache_dir, exist_ok=True)
        print(f'downloading {name} (data files only are used) into {cache_dir}')
        subprocess.run([
            sys.executable, '-m', 'pip', 'download', '--no-deps', '-q', '-d', cache_dir,
            f'deepforest=={DEEPFOREST_VERSION}'
        ], check=True)
    return path


def parse_voc(xml_text: bytes) -> Tuple[Tuple[int, int], np.ndarray]:
    """Parse a Pascal-VOC annotation.

    Every object counts as a tree (SOAP_061 labels its trees 'Alive'/'Dead').

    Args:
        xml_text (bytes): The XML file's content.

    Returns:
        tuple: ``(width, height)`` and an (N, 4) float array of x0, y0, x1, y1 boxes.
    """
    root = ET.fromstring(xml_text)
    size = root.find('size')
    wh = (int(size.find('width').text), int(size.find('height').text))
    boxes = []
    for obj in root.iter('object'):
        bb = obj.find('bndbox')
        boxes.append([float(bb.find(k).text) for k in ('xmin', 'ymin', 'xmax', 'ymax')])
    return wh, np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


def tile_starts(length: int, tile: int, stride: int) -> List[int]:
    """Start offsets of tiles along one axis of ``length`` pixels.

    With ``stride < tile`` the tiles overlap and the last one is aligned to the end;
    with ``stride == tile`` they partition the axis and the last one may be shorter.

    Args:
        length (int): Extent of the region.
        tile (int): Tile extent.
        stride (int): Step between tile starts.

    Returns:
        list[int]: Tile start offsets relative to the region start.
    """
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile + 1, stride))
    if stride < tile and starts[-1] + tile < length:
        starts.append(length - tile)
    elif stride >= tile and starts[-1] + tile < length:
        starts.append(starts[-1] + stride)
    return starts


def clip_boxes(boxes: np.ndarray, window: Tuple[int, int, int, int],
               min_visible: float) -> np.ndarray:
    """Boxes of a tile, in tile coordinates.

    Args:
        boxes (ndarray): (N, 4) source boxes x0, y0, x1, y1.
        window (tuple): Tile rectangle x0, y0, x1, y1 in source coordinates.
        min_visible (float): Keep a box when this fraction of its area is inside.

    Returns:
        ndarray: (M, 4) clipped boxes shifted to the tile origin.
    """
    wx0, wy0, wx1, wy1 = window
    cx0 = np.clip(boxes[:, 0], wx0, wx1)
    cy0 = np.clip(boxes[:, 1], wy0, wy1)
    cx1 = np.clip(boxes[:, 2], wx0, wx1)
    cy1 = np.clip(boxes[:, 3], wy0, wy1)
    inside = (cx1 - cx0) * (cy1 - cy0)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = (area > 0) & (inside >= min_visible * area) & (cx1 - cx0 >= 2) & (cy1 - cy0 >= 2)
    out = np.stack([cx0 - wx0, cy0 - wy0, cx1 - wx0, cy1 - wy0], axis=1)
    return out[keep]


def split_regions(stem: str, policy: str, width: int, height: int,
                  val_fraction: float) -> List[Region]:
    """Assign the rectangles of one source image to splits."""
    if policy == 'train':
        return [Region(stem, 'train', 0, 0, width, height)]
    cut = int(round(height * (1 - val_fraction)))
    return [Region(stem, 'train', 0, 0, width, cut), Region(stem, 'val', 0, cut, width, height)]


def convert(wheel: str, out: str, tile: int = 400, stride: int = 300,
            min_visible: float = 0.5, val_fraction: float = 0.34) -> Dict[str, dict]:
    """Write the tiled COCO data set and return the COCO dicts per split.

    Args:
        wheel (str): Path of the deepforest wheel.
        out (str): Output folder.
        tile (int): Tile size in pixels. Defaults to 400.
        stride (int): Stride between train tiles. Defaults to 300.
        min_visible (float): Fraction of a box that must lie in a tile. Defaults to 0.5.
        val_fraction (float): Bottom fraction of each large image used for val.
            Defaults to 0.34.

    Returns:
        dict: ``{'train': coco_dict, 'val': coco_dict}``.
    """
    if not 0 < stride <= tile:
        raise ValueError(f'stride must be in (0, tile={tile}], got {stride}')
    if not 0 < val_fraction < 1:
        raise ValueError(f'val_fraction must be in (0, 1), got {val_fraction}')
    os.makedirs(osp.join(out, 'images'), exist_ok=True)
    os.makedirs(osp.join(out, 'annotations'), exist_ok=True)
    cocos = {
        split: dict(images=[], annotations=[],
                    categories=[dict(id=i + 1, name=c) for i, c in enumerate(CLASSES)])
        for split in ('train', 'val')
    }
    with zipfile.ZipFile(wheel) as zf:
        for stem, policy in SOURCES:
            (width, height), boxes = parse_voc(zf.read(f'deepforest/data/{stem}.xml'))
            buf = np.frombuffer(zf.read(f'deepforest/data/{stem}.png'), np.uint8)
            image = cv2.imdecode(buf, cv2.IMREAD_COLOR)
            if image.shape[:2] != (height, width):
                raise ValueError(f'{stem}: image is {image.shape[1]}x{image.shape[0]}, '
                                 f'annotation says {width}x{height}')
            for region in split_regions(stem, policy, width, height, val_fraction):
                step = stride if region.split == 'train' else tile
                for ty in tile_starts(region.y1 - region.y0, tile, step):
                    for tx in tile_starts(region.x1 - region.x0, tile, step):
                        x0, y0 = region.x0 + tx, region.y0 + ty
                        x1, y1 = min(x0 + tile, region.x1), min(y0 + tile, region.y1)
                        tile_boxes = clip_boxes(boxes, (x0, y0, x1, y1), min_visible)
                        _add_tile(cocos[region.split], out, image[y0:y1, x0:x1],
                                  f'{stem}_x{x0}_y{y0}.png', tile_boxes,
                                  dict(source=stem, x0=x0, y0=y0))
    for split, coco in cocos.items():
        with open(osp.join(out, 'annotations', f'{split}.json'), 'w') as f:
            json.dump(coco, f)
    return cocos


def _add_tile(coco: dict, out: str, pixels: np.ndarray, file_name: str, boxes: np.ndarray,
              origin: dict) -> None:
    image_id = len(coco['images']) + 1
    cv2.imwrite(osp.join(out, 'images', file_name), pixels)
    coco['images'].append(dict(id=image_id, file_name=file_name, width=pixels.shape[1],
                               height=pixels.shape[0], **origin))
    for x0, y0, x1, y1 in boxes.tolist():
        coco['annotations'].append(
            dict(id=len(coco['annotations']) + 1, image_id=image_id, category_id=1,
                 bbox=[x0, y0, x1 - x0, y1 - y0], area=(x1 - x0) * (y1 - y0), iscrowd=0))


def summarize(cocos: Dict[str, dict]) -> str:
    """A human-readable summary: images, boxes and box sizes per split."""
    lines = []
    for split, coco in cocos.items():
        sides = np.sqrt([a['area'] for a in coco['annotations']]) if coco['annotations'] \
            else np.zeros(1)
        lines.append(
            f'{split:5s}: {len(coco["images"]):3d} images, {len(coco["annotations"]):4d} boxes, '
            f'box side sqrt(area) min/median/max {sides.min():.0f}/{np.median(sides):.0f}/'
            f'{sides.max():.0f} px, {np.mean(sides < 32) * 100:.0f}% under 32 px')
    return '\n'.join(lines)
