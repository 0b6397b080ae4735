"""The generated "digits on textures" detection set (10 classes, COCO format).

Ten classes: the handwritten digits bundled with scikit-learn (1,797 8x8 glyphs),
upscaled to 24-96 px with random aspect, colour and position, pasted with soft
edges onto textured backgrounds (smooth colour noise or random crops of the photos
bundled with scikit-learn), with limited overlap. Train and val use disjoint glyph
sets. Boxes are the tight boxes of the pasted glyph's ink. The CLI is
``tools/dataset_converters/synthetic.py``; docs/datasets.md describes the set.
"""
import json
import os
import os.path as osp
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np

CLASSES = tuple(str(d) for d in range(10))
INK_THRESHOLD = 0.25


def load_glyphs(seed: int, val_share: float = 0.2) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """Split scikit-learn's digit glyphs into disjoint train and val sets.

    Args:
        seed (int): Seed of the split.
        val_share (float): Share of glyphs reserved for val.

    Returns:
        dict: ``{'train': (glyphs, labels), 'val': (glyphs, labels)}``; glyphs are
        float arrays in [0, 1] of shape (N, 8, 8).
    """
    from sklearn.datasets import load_digits
    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.target))
    n_val = int(round(len(order) * val_share))
    glyphs = digits.images.astype(np.float32) / 16.0
    return {
        'val': (glyphs[order[:n_val]], digits.target[order[:n_val]]),
        'train': (glyphs[order[n_val:]], digits.target[order[n_val:]]),
    }


def load_photos() -> List[np.ndarray]:
    """The sample photos bundled with scikit-learn, as BGR uint8 arrays."""
    import sklearn.datasets
    folder = osp.join(osp.dirname(sklearn.datasets.__file__), 'images')
    photos = [cv2.imread(osp.join(folder, f)) for f in sorted(os.listdir(folder))
              if f.endswith('.jpg')]
    return [p for p in photos if p is not None]


def make_background(rng: np.random.Generator, size: int,
                    photos: Sequence[np.ndarray]) -> np.ndarray:
    """A textured background: a photo crop or smooth colour noise, plus grain."""
    if photos and rng.random() < 0.5:
        photo = photos[rng.integers(len(photos))]
        crop = int(rng.integers(size // 2, min(photo.shape[:2])))
        y = int(rng.integers(0, photo.shape[0] - crop + 1))
        x = int(rng.integers(0, photo.shape[1] - crop + 1))
        bg = cv2.resize(photo[y:y + crop, x:x + crop], (size, size),
                        interpolation=cv2.INTER_LINEAR).astype(np.float32)
        if rng.random() < 0.5:
            bg = bg[:, ::-1]
        bg = bg * rng.uniform(0.6, 1.2) + rng.uniform(-30, 30, size=3)
    else:
        cells = int(rng.integers(2, 9))
        coarse = rng.uniform(0, 255, size=(cells, cells, 3)).astype(np.float32)
        bg = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
        fine = rng.normal(0, rng.uniform(5, 25), size=(size // 4, size // 4, 3))
        bg = bg + cv2.resize(fine.astype(np.float32), (size, size),
                             interpolation=cv2.INTER_LINEAR)
    return bg


def render_glyph(rng: np.random.Generator, glyph: np.ndarray,
                 height: int) -> Tuple[np.ndarray, Tuple[int, int, int, int]]:
    """Upscale one 8x8 glyph into a soft alpha mask and find its tight ink box.

    Args:
        rng (Generator): Random generator.
        glyph (ndarray): (8, 8) glyph in [0, 1].
        height (int): Target glyph height in pixels.

    Returns:
        tuple: The alpha mask (h, w) in [0, 1] and the ink box x0, y0, x1, y1
        inside the mask.
    """
    width = max(8, int(round(height * rng.uniform(0.75, 1.25))))
    alpha = cv2.resize(glyph, (width, height), interpolation=cv2.INTER_CUBIC)
    # Faint strokes of the 8x8 glyphs would paste as a tinted rectangle: keep the ink.
    low = rng.uniform(0.15, 0.3)
    alpha = np.clip((alpha - low) / rng.uniform(0.3, 0.5), 0, 1)
    ys, xs = np.nonzero(alpha > INK_THRESHOLD)
    return alpha, (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


def _overlap_ok(box: Sequence[float], boxes: Sequence[Sequence[float]],
                max_cover: float) -> bool:
    """Whether ``box`` covers at most ``max_cover`` of any placed box and vice versa."""
    for other in boxes:
        iw = min(box[2], other[2]) - max(box[0], other[0])
        ih = min(box[3], other[3]) - max(box[1], other[1])
        if iw <= 0 or ih <= 0:
            continue
        smaller = min((box[2] - box[0]) * (box[3] - box[1]),
                      (other[2] - other[0]) * (other[3] - other[1]))
        if iw * ih > max_cover * smaller:
            return False
    return True


def make_image(rng: np.random.Generator, glyphs: np.ndarray, labels: np.ndarray, size: int,
               photos: Sequence[np.ndarray], min_size: int = 24, max_size: int = 96,
               max_objects: int = 6,
               max_cover: float = 0.25) -> Tuple[np.ndarray, List[Tuple[List[int], int]]]:
    """Render one image and its annotations.

    Args:
        rng (Generator): Random generator.
        glyphs (ndarray): Glyph pool (N, 8, 8).
        labels (ndarray): Class of each glyph.
        size (int): Image side in pixels.
        photos (list[ndarray]): Background photos.
        min_size (int): Smallest glyph height. Defaults to 24.
        max_size (int): Largest glyph height. Defaults to 96.
        max_objects (int): Most objects per image. Defaults to 6.
        max_cover (float): Most of a box another box may cover. Defaults to 0.25.

    Returns:
        tuple: BGR uint8 image and a list of (box x0, y0, x1, y1, label).
    """
    img = make_background(rng, size, photos)
    objects = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        k = int(rng.integers(len(glyphs)))
        height = int(round(np.exp(rng.uniform(np.log(min_size), np.log(max_size)))))
        alpha, (ix0, iy0, ix1, iy1) = render_glyph(rng, glyphs[k], height)
        h, w = alpha.shape
        for _attempt in range(20):
            x = int(rng.integers(-ix0, size - ix1 + 1))
            y = int(rng.integers(-iy0, size - iy1 + 1))
            box = [x + ix0, y + iy0, x + ix1, y + iy1]
            if _overlap_ok(box, [o[0] for o in objects], max_cover):
                break
        else:
            continue
        # Paste the part of the glyph that falls inside the image.
        px0, py0, px1, py1 = max(x, 0), max(y, 0), min(x + w, size), min(y + h, size)
        a = alpha[py0 - y:py1 - y, px0 - x:px1 - x, None]
        region = img[py0:py1, px0:px1]
        local = region.mean()
        if local > 128:
            color = rng.uniform(0, max(local - 100, 20), size=3)
        else:
            color = rng.uniform(min(local + 100, 235), 255, size=3)
        img[py0:py1, px0:px1] = region * (1 - a) + color * a
        objects.append((box, int(labels[k])))
    img = img + rng.normal(0, 3, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), objects


def generate(out: str, num_train: int = 4000, num_val: int = 500, size: int = 256,
             seed: int = 0, **image_kwargs) -> Dict[str, dict]:
    """Write images and COCO annotations for both splits.

    Args:
        out (str): Output folder.
        num_train (int): Train images. Defaults to 4000.
        num_val (int): Val images. Defaults to 500.
        size (int): Image side. Defaults to 256.
        seed (int): Seed of the whole set. Defaults to 0.
        **image_kwargs: Passed to :func:`make_image`.

    Returns:
        dict: ``{'train': coco_dict, 'val': coco_dict}``.
    """
    os.makedirs(osp.join(out, 'images'), exist_ok=True)
    os.makedirs(osp.join(out, 'annotations'), exist_ok=True)
    pools = load_glyphs(seed)
    photos = load_photos()
    cocos = {}
    for split_index, (split, count) in enumerate((('train', num_train), ('val', num_val))):
        rng = np.random.default_rng([seed, split_index])
        coco = dict(images=[], annotations=[],
                    categories=[dict(id=i + 1, name=c) for i, c in enumerate(CLASSES)])
        glyphs, labels = pools[split]
        for i in range(count):
            img, objects = make_image(rng, glyphs, labels, size, photos, **image_kwargs)
            name = f'{split}_{i:05d}.jpg'
            cv2.imwrite(osp.join(out, 'images', name), img, [cv2.IMWRITE_JPEG_QUALITY, 92])
            coco['images'].append(dict(id=i + 1, file_name=name, width=size, height=size))
            for (x0, y0, x1, y1), label in objects:
                coco['annotations'].append(
                    dict(id=len(coco['annotations']) + 1, image_id=i + 1,
                         category_id=label + 1, bbox=[x0, y0, x1 - x0, y1 - y0],
                         area=(x1 - x0) * (y1 - y0), iscrowd=0))
        with open(osp.join(out, 'annotations', f'{split}.json'), 'w') as f:
            json.dump(coco, f)
        cocos[split] = coco
    return cocos
