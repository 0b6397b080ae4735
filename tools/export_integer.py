"""Export a trained quantized detector to one self-contained integer-program file.

Builds the model from its config, loads the checkpoint, converts it to the integer
engine (:func:`mmaqd.integer.convert_detector`) and writes the layer graph with
bit-packed weights and integer constants (:func:`mmaqd.integer.export.export_integer`).
The file loads with ``torch.load(..., weights_only=True)`` and runs with
:func:`mmaqd.integer.export.load_integer`, without mmdet. The export is checked
to reproduce the engine's outputs exactly on an example image.

It ends with a verdict line and one JSON object with the sizes; exit code 0: written
and checked, 2: could not run (the check failing is an error too).

Example::

    python tools/export_integer.py configs/aqd/retinanet_r18_fpn_aqd-w4a4_synthetic.py \
        work_dirs/retinanet_r18_fpn_aqd-w4a4_synthetic/iter_300.pth retinanet_w4a4.int.pth
"""
import argparse
import json
import os.path as osp
import sys
from typing import Optional, Sequence

import torch

from mmaqd.apis import (DEFAULT_SIZE, example_shape, load_trained, quiet_logs, run_check,
                        trained_model_parser, verdict)
from mmaqd.integer import convert_detector
from mmaqd.integer.export import export_integer, weight_statistics


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = trained_model_parser('Export an integer program (mmaqd)')
    parser.add_argument('out', help='output file')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='example image size (default: the test pipeline\'s Resize '
                             f'scale, else {DEFAULT_SIZE} x {DEFAULT_SIZE})')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    quiet_logs(args.verbose)
    print(f'[1/2] loading {args.checkpoint} and converting it to the integer engine', flush=True)
    cfg, model = load_trained(args.config, args.checkpoint, args.cfg_options)
    engine = convert_detector(model)
    height, width = args.shape or example_shape(cfg)
    image = torch.zeros(1, 3, height, width)
    print(f'[2/2] recording the program on a 1x3x{height}x{width} image, packing the weights, '
          f'writing {args.out} and checking it against the engine', flush=True)
    payload = export_integer(engine, args.out, image)
    stats = weight_statistics(payload)
    file_bytes = osp.getsize(args.out)
    ckpt_bytes = osp.getsize(args.checkpoint)
    fp32 = stats['fp32_weight_bytes']
    result = dict(
        stats,
        out=args.out,
        example_shape=[1, 3, height, width],
        file_bytes=file_bytes,
        checkpoint_bytes=ckpt_bytes,
        file_vs_checkpoint=file_bytes / ckpt_bytes,
        file_vs_fp32_weights=file_bytes / fp32,
        packed_vs_fp32_weights=stats['packed_weight_bytes'] / fp32,
        ideal_ratio=stats['declared_bits'] / 32,
        config_w_bits=cfg.model.get('quant_cfg', {}).get('w_bits'))
    print(f'{osp.basename(args.config)}: {stats["num_layers"]} conv layers, '
          f'{stats["num_adds"]} adds, {stats["weight_elements"]} weights '
          f'(declared {stats["declared_bits"]:.2f} bits, stored {stats["stored_bits"]:.2f} bits '
          f'per weight on average)')
    print(f'packed weights: {stats["packed_weight_bytes"]} bytes = '
          f'{result["packed_vs_fp32_weights"]:.4f} of the FP32 weights ({fp32} bytes); '
          f'ideal {result["ideal_ratio"]:.4f} (b/32 with each layer\'s b; config w_bits '
          f'{result["config_w_bits"]})')
    print(f'{args.out}: {file_bytes} bytes = {result["file_vs_fp32_weights"]:.4f} of the FP32 '
          f'weights, {result["file_vs_checkpoint"]:.4f} of the checkpoint ({ckpt_bytes} bytes)')
    result['passed'] = True  # export_integer raises if the file does not reproduce the engine
    print(verdict(True, f'{args.out} reproduces the integer engine\'s outputs', 'all equal'))
    print(json.dumps(result))
    return result


if __name__ == '__main__':
    sys.exit(run_check(main))
