"""Export a trained quantized detector as a QDQ ONNX graph and check it in onnxruntime.

Builds the model from its config, loads the checkpoint, converts it to the integer
engine and writes the engine's program as ONNX (opset 21: int4/uint4 codes up to
4 bits, int8/uint8 up to 8; see :mod:`mmaqd.integer.onnx_export`). Image ->
head outputs; mmdet's post-processing stays outside. The graph passes
``onnx.checker`` and is then compared, on the first val images (generated ones
if the data is missing), with the integer engine and with the fake-quant model.

It ends with one verdict line (PASS when at least 99% of the head outputs equal the
engine's) and one JSON object with the agreement numbers; exit code 0: passed,
1: failed, 2: could not run. For the bbox mAP of the ONNX model use
``tools/test.py CONFIG CKPT --integer onnx``.

Example::

    python tools/export_onnx.py configs/aqd/retinanet_r18_fpn_aqd-w4a4_synthetic.py \
        work_dirs/retinanet_r18_fpn_aqd-w4a4_synthetic/iter_300.pth retinanet_w4a4.onnx
"""
import argparse
import json
import os.path as osp
import sys
from typing import Optional, Sequence

import torch
from mmengine.utils import ProgressBar

from mmaqd.apis import (eval_images, example_shape, load_trained, merge_batches, quiet_logs,
                        run_check, trained_model_parser, verdict)
from mmaqd.integer import convert_detector
from mmaqd.integer.compare import code_agreement
from mmaqd.integer.detector import head_outputs
from mmaqd.integer.onnx_export import OnnxDetector, export_onnx


#: Smallest fraction of head outputs equal to the engine's for a PASS (float rounding
#: in the runtime's requantization moves a few values; measured 99.85% at w4).
MIN_EQUAL_VS_ENGINE = 0.99


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = trained_model_parser('Export a QDQ ONNX graph (mmaqd)')
    parser.add_argument('out', help='output .onnx file')
    parser.add_argument('--num-images', type=int, default=4,
                        help='val images to compare on (default 4)')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    quiet_logs(args.verbose)
    cfg, model = load_trained(args.config, args.checkpoint, args.cfg_options)
    engine = convert_detector(model)
    kinds = head_outputs(model.bbox_head)
    height, width = example_shape(cfg)
    _, report = export_onnx(engine, args.out, torch.zeros(1, 3, height, width), kinds)
    runtime = OnnxDetector(args.out, len(kinds))

    images, source = eval_images(cfg, model, args.num_images, height)
    runs = dict(int=[], onnx=[], fake_quant=[])
    progress = ProgressBar(len(images))
    with torch.no_grad():
        for batch in images:
            runs['int'].append(engine(batch, 'int'))
            runs['onnx'].append(runtime(batch))
            runs['fake_quant'].append(
                model.bbox_head.raw_forward(model.neck(model.backbone(batch))))
            progress.update()
    print()
    units = engine.head.output_units()
    int_out, onnx_out, fq_out = ([merge_batches(outs, k) for k in range(len(kinds))]
                                 for outs in runs.values())
    out_units = [list(units[k]) * len(images) for k in range(len(kinds))]
    vs_engine = code_agreement(int_out, onnx_out, out_units)
    onnx_codes = [[torch.round(o.double() / u.double().view(1, -1, 1, 1)) for o, u in zip(k, uk)]
                  for k, uk in zip(onnx_out, out_units)]
    vs_fq = code_agreement(onnx_codes, fq_out, out_units)
    result = dict(report, config=osp.basename(args.config), out=args.out,
                  file_bytes=osp.getsize(args.out),
                  images=sum(int(b.shape[0]) for b in images),
                  vs_engine_equal_fraction=vs_engine['equal_fraction'],
                  vs_engine_max_lsb=vs_engine['max_lsb'],
                  vs_engine_relative_error=vs_engine['relative_error'],
                  vs_fakequant_equal_fraction=vs_fq['equal_fraction'],
                  vs_fakequant_max_lsb=vs_fq['max_lsb'],
                  vs_fakequant_relative_error=vs_fq['relative_error'],
                  passed=vs_engine['equal_fraction'] >= MIN_EQUAL_VS_ENGINE)
    print(f'{args.out}: opset {report["opset"]}, {report["nodes"]} nodes, initializer types '
          f'{report["initializer_types"]}, {result["file_bytes"]} bytes; onnx.checker passed')
    print(f'onnxruntime vs integer engine on {result["images"]} {source}: '
          f'{100 * vs_engine["equal_fraction"]:.2f}% equal outputs, max '
          f'{vs_engine["max_lsb"]:.2f} LSB, relative error '
          f'{100 * vs_engine["relative_error"]:.4f}%')
    print(f'onnxruntime vs fake-quant model: {100 * vs_fq["equal_fraction"]:.2f}% equal, '
          f'max {vs_fq["max_lsb"]:.1f} LSB, relative error '
          f'{100 * vs_fq["relative_error"]:.2f}% (for information: training does not '
          f'simulate the integer rounding)')
    print(verdict(result['passed'], f'onnxruntime equals the integer engine on '
                  f'{100 * vs_engine["equal_fraction"]:.2f}% of the head outputs',
                  f'>= {100 * MIN_EQUAL_VS_ENGINE:.0f}%: the runtime requantizes with a float '
                  f'scale, the engine with a fixed-point multiplier'))
    print(json.dumps(result))
    return result


if __name__ == '__main__':
    sys.exit(run_check(main))
