"""Generate the multi-class synthetic detection set ("digits on textures") in COCO format.

Ten classes: the handwritten digits bundled with scikit-learn (1,797 8x8 glyphs),
upscaled to 24-96 px with random aspect, colour and position, pasted with soft
edges onto textured backgrounds (smooth colour noise or random crops of the photos
bundled with scikit-learn), with limited overlap. Train and val use disjoint glyph
sets, so val measures generalisation to unseen handwriting, not memorisation.
Boxes are the tight boxes of the pasted glyph's ink. Output::

    OUT/images/{train,val}_NNNNN.jpg
    OUT/annotations/{train,val}.json

Deterministic for a given ``--seed`` and sizes.

Example::

    python tools/dataset_converters/synthetic.py --out data/synthetic
"""
import argparse
from typing import Optional, Sequence

import numpy as np

from mmaqd.datasets.synthetic_digits import generate


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default='data/synthetic', help='output folder')
    parser.add_argument('--num-train', type=int, default=4000)
    parser.add_argument('--num-val', type=int, default=500)
    parser.add_argument('--size', type=int, default=256, help='image side in pixels')
    parser.add_argument('--seed', type=int, default=0)
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    cocos = generate(args.out, args.num_train, args.num_val, args.size, args.seed)
    print(f'synthetic digits -> {args.out}')
    for split, coco in cocos.items():
        sides = np.sqrt([a['area'] for a in coco['annotations']])
        print(f'{split:5s}: {len(coco["images"])} images, {len(coco["annotations"])} boxes, '
              f'box side min/median/max {sides.min():.0f}/{np.median(sides):.0f}/'
              f'{sides.max():.0f} px')


if __name__ == '__main__':
    main()
