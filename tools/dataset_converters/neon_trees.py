"""Tile the NEON tree-crown images shipped in the ``deepforest`` wheel into COCO format.

The ``deepforest`` wheel carries four annotated aerial RGB images (Pascal-VOC XML,
about 950 tree-crown boxes). This script reads them straight from the wheel (no
deepforest install, no other dependency of it), cuts them into tiles and writes::

    OUT/images/*.png
    OUT/annotations/train.json
    OUT/annotations/val.json

Split: the two large YELL images are cut at a horizontal line; the top part goes to
train, the bottom part to val, so that no pixel is shared between the splits. The
small OSBS and SOAP images go to train. Train tiles overlap (``--stride``); val tiles
partition their region, so every val tree is counted once. A box is kept in a tile
when at least ``--min-visible`` of its area lies inside the tile, clipped to it.
The output is fully deterministic.

Example::

    python tools/dataset_converters/neon_trees.py --out data/neon_trees
"""
import argparse
from typing import Optional, Sequence

from mmaqd.datasets.neon_trees import convert, find_or_fetch_wheel, summarize


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default='data/neon_trees', help='output folder')
    parser.add_argument('--wheel', help='deepforest wheel (default: download into the cache)')
    parser.add_argument('--tile', type=int, default=400)
    parser.add_argument('--stride', type=int, default=300, help='stride of train tiles')
    parser.add_argument('--min-visible', type=float, default=0.5)
    parser.add_argument('--val-fraction', type=float, default=0.34)
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    cocos = convert(find_or_fetch_wheel(args.wheel), args.out, args.tile, args.stride,
                    args.min_visible, args.val_fraction)
    print(f'NEON tree crowns -> {args.out}')
    print(summarize(cocos))


if __name__ == '__main__':
    main()
