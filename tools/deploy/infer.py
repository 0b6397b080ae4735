"""Detect objects in an image with an exported detector file, without mmdet or torch.

Needs onnxruntime, numpy and Pillow only. The file is what ``tools/export_onnx.py``
writes (integer kernels + metadata). Prints one JSON line per box (label, class,
score, x1 y1 x2 y2 in image pixels) and, with ``--out``, draws them.

Example::

    python tools/deploy/infer.py retinanet_w4a4.onnx data/synthetic/images/val_00000.jpg \
        --out vis.jpg --score-thr 0.3
"""
import argparse
import json
import sys
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw

from mmaqd_deploy import DetectorFile


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Run an exported mmaqd detector on an image')
    parser.add_argument('model', help='.onnx detector file (tools/export_onnx.py)')
    parser.add_argument('image', help='image file')
    parser.add_argument('--out', help='write the image with its boxes here')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='smallest score printed and drawn (default 0.3)')
    parser.add_argument('--threads', type=int, default=None, help="onnxruntime's threads")
    args = parser.parse_args(argv)
    if not 0 <= args.score_thr <= 1:
        parser.error(f'--score-thr must be in [0, 1], got {args.score_thr}')
    return args


def main(argv: Optional[Sequence[str]] = None) -> list:
    args = parse_args(argv)
    detector = DetectorFile(args.model, args.threads)
    image = Image.open(args.image).convert('RGB')
    found = detector(np.asarray(image))
    classes = detector.meta['classes']
    rows = [dict(label=int(label), name=classes[label], score=round(float(score), 4),
                 box=[round(float(v), 1) for v in box])
            for box, score, label in zip(*found) if score >= args.score_thr]
    for row in rows:
        print(json.dumps(row))
    if args.out:
        draw = ImageDraw.Draw(image)
        for row in rows:
            draw.rectangle(row['box'], outline=(255, 40, 40), width=2)
            draw.text((row['box'][0] + 2, row['box'][1] + 1), f'{row["name"]} {row["score"]:.2f}',
                      fill=(255, 255, 0))
        image.save(args.out)
    return rows


if __name__ == '__main__':
    main()
    sys.exit(0)
