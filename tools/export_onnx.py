"""Export a quantized detector as ONNX and check it in onnxruntime.

Builds the model from its config (a trained checkpoint, or ``--random-init``:
random weights calibrated on generated images), converts it to the integer
engine and writes the engine's program as ONNX:

- ``--format kernels`` (default): a detector file for deployment. uint8 pixels
  in, real head outputs out, every conv on onnxruntime's integer kernels
  (``QLinearConv``, ``ConvInteger``), adds as ``QLinearAdd``, and metadata
  (classes, priors, box coder, test_cfg, mean, channel order, resize) for
  ``tools/deploy/infer.py``. The scales of the 8-bit tensors between residual
  and FPN adds are calibrated on training images (see
  :mod:`mmaqd.integer.onnx_kernels`).
- ``--format qdq``: the QDQ graph that mirrors the engine's arithmetic (equal
  head outputs; float kernels in onnxruntime, see :mod:`mmaqd.integer.onnx_export`).

The graph is then compared, on the first val images (generated ones if the data
is missing), with the integer engine and with the fake-quant model. It ends with
one verdict line and one JSON object; exit code 0: passed, 1: failed, 2: could
not run. PASS for ``kernels``: onnxruntime's optimised graph keeps every integer
conv node written (a conv read by several quantizers is one node per quantizer) and
has no float conv. PASS for ``qdq``: at least 99% of the
head outputs equal the engine's. For the bbox mAP use
``tools/test.py CONFIG CKPT --integer onnx`` (or ``onnx-qdq``).

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

from mmaqd.apis import (add_common_arguments, calibration_images, deploy_metadata, eval_images,
                        example_shape, generated_images, load_config, load_trained,
                        merge_batches, quiet_logs, random_calibrated_detector, run_check,
                        verdict)
from mmaqd.integer import convert_detector
from mmaqd.integer.compare import code_agreement
from mmaqd.integer.detector import head_outputs
from mmaqd.integer.onnx_export import OnnxDetector, export_onnx
from mmaqd.integer.onnx_kernels import (CALIBRATION_PERCENTILE, export_kernel_onnx,
                                        integer_conv_check)

#: Smallest fraction of the QDQ graph's head outputs equal to the engine's for a PASS
#: (float rounding in the runtime's requantization moves a few values; 99.85% at w4).
MIN_EQUAL_VS_ENGINE = 0.99


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Export an ONNX graph (mmaqd)')
    parser.add_argument('config', help='config of a quantized detector')
    parser.add_argument('checkpoint', nargs='?', help='trained checkpoint')
    parser.add_argument('out', help='output .onnx file')
    parser.add_argument('--format', choices=['kernels', 'qdq'], default='kernels',
                        help='kernels: integer kernels, for deployment (default); qdq: the '
                        'QDQ graph equal to the integer engine')
    parser.add_argument('--random-init', action='store_true',
                        help='random weights, calibrated on generated images')
    parser.add_argument('--bits', type=int, help='with --random-init: w_bits and a_bits')
    parser.add_argument('--size', type=int, default=256,
                        help='side of generated images (random init or no data)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--num-images', type=int, default=4,
                        help='val images to compare on (default 4)')
    parser.add_argument('--calib-images', type=int, default=16,
                        help='training images that set the 8-bit scales (kernels; default 16)')
    parser.add_argument('--calib-percentile', type=float, default=CALIBRATION_PERCENTILE,
                        help='percentile of the values that sets each 8-bit range (kernels; '
                        f'default {CALIBRATION_PERCENTILE}; 100: min and max)')
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    if (args.checkpoint is None) == (not args.random_init):
        parser.error('give either a CHECKPOINT or --random-init')
    if args.bits is not None and not args.random_init:
        parser.error('--bits applies to --random-init only (a checkpoint has its own bits)')
    for name in ('num_images', 'calib_images'):
        if getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} must be >= 1, got {getattr(args, name)}')
    if not 50 < args.calib_percentile <= 100:
        parser.error(f'--calib-percentile must be in (50, 100], got {args.calib_percentile}')
    return args


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    quiet_logs(args.verbose)
    if args.random_init:
        cfg = load_config(args.config, args.cfg_options)
        model = random_calibrated_detector(cfg, args.bits, args.seed, args.size)
        mean = model.data_preprocessor.mean
        images = [generated_images(args.num_images, args.size, args.seed) - mean]
        source = 'generated images'
        calib = [generated_images(args.calib_images, args.size, args.seed + 1000) - mean]
        calib_source = 'generated images'
    else:
        cfg, model = load_trained(args.config, args.checkpoint, args.cfg_options)
        images, source = eval_images(cfg, model, args.num_images, args.size)
        calib, calib_source = calibration_images(cfg, model, args.calib_images, args.size)
    engine = convert_detector(model)
    kinds = head_outputs(model.bbox_head)
    height, width = example_shape(cfg)
    if args.format == 'kernels':
        mean = model.data_preprocessor.mean.flatten().tolist()
        _, report = export_kernel_onnx(engine, args.out, calib, mean, kinds,
                                       deploy_metadata(cfg, model), args.calib_percentile)
        report.update(integer_conv_check(args.out, report['conv_nodes']),
                      calibration_source=calib_source)
    else:
        _, report = export_onnx(engine, args.out, torch.zeros(1, 3, height, width), kinds)
        report['format'] = 'qdq'
    runtime = OnnxDetector(args.out, len(kinds))

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
                  vs_fakequant_relative_error=vs_fq['relative_error'])
    print(f'{args.out}: {report["format"]}, opset {report["opset"]}, {report["nodes"]} nodes, '
          f'{result["file_bytes"]} bytes; onnx.checker passed')
    print(f'onnxruntime vs integer engine on {result["images"]} {source}: '
          f'{100 * vs_engine["equal_fraction"]:.2f}% equal outputs, max '
          f'{vs_engine["max_lsb"]:.2f} LSB, relative error '
          f'{100 * vs_engine["relative_error"]:.4f}%')
    print(f'onnxruntime vs fake-quant model: {100 * vs_fq["equal_fraction"]:.2f}% equal, '
          f'max {vs_fq["max_lsb"]:.1f} LSB, relative error '
          f'{100 * vs_fq["relative_error"]:.2f}% (for information: training does not '
          f'simulate the integer rounding)')
    if args.format == 'kernels':
        if report['clamped_weights']:
            print(f'WARNING: 8-bit weight codes -128 of negative-BN-gamma channels became 127 to '
                  f'fit int8 with the sign folded in: {report["clamped_weights"]}')
        result['passed'] = report['all_integer']
        print(verdict(result['passed'], f'onnxruntime runs the {report["convs"]} convs as '
                      f'{report["integer_convs"]} integer-kernel nodes (of '
                      f'{report["conv_nodes"]} written) and {report["float_convs"]} float convs',
                      'every conv on an integer kernel'))
    else:
        result['passed'] = vs_engine['equal_fraction'] >= MIN_EQUAL_VS_ENGINE
        print(verdict(result['passed'], f'onnxruntime equals the integer engine on '
                      f'{100 * vs_engine["equal_fraction"]:.2f}% of the head outputs',
                      f'>= {100 * MIN_EQUAL_VS_ENGINE:.0f}%: the runtime requantizes with a '
                      f'float scale, the engine with a fixed-point multiplier'))
    print(json.dumps(result))
    return result


if __name__ == '__main__':
    sys.exit(run_check(main))
