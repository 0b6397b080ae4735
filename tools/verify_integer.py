"""Prove that a quantized detector runs in integer arithmetic.

Builds the model (from a checkpoint, or random weights calibrated on a few
generated images), converts it to the integer engine and runs, on the same images:

- the integer engine (int64 only) and its float64 deploy-mode simulation, which
  must agree on every output element (``equal_fraction`` 1.0);
- the fake-quant model, whose head outputs are compared with the engine's in
  output units (LSB): plain (for information) and integer-aware (the eval-mode
  forward that IntegerAwareQATHook sets up, which computes the engine's integers).

It ends with one verdict line (PASS / FAIL and the requirement) and one JSON
object with the numbers. Exit code 0: passed, 1: the check failed, 2: it could not
run (bad arguments or input). Logs are quiet unless ``--verbose``.

Example:
    python tools/verify_integer.py configs/aqd/retinanet_r18_fpn_aqd-w4a4_synthetic.py \
        --random-init --bits 2
"""
import argparse
import json
import os.path as osp
import sys
from typing import Optional, Sequence

import torch
from mmengine.runner import load_checkpoint
from mmengine.utils import ProgressBar

from mmaqd.apis import (add_common_arguments, build_quantized_detector, eval_images,
                        generated_images, load_config, merge_batches, quiet_logs,
                        random_calibrated_detector, run_check, verdict)
from mmaqd.integer import convert_detector, sync_engine_units
from mmaqd.integer.compare import code_agreement, exact_agreement
from mmaqd.quant import set_integer_aware


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Verify integer-only inference (mmaqd)')
    parser.add_argument('config', help='config of a quantized detector')
    parser.add_argument('checkpoint', nargs='?', help='trained checkpoint')
    parser.add_argument('--random-init', action='store_true',
                        help='random weights, calibrated on generated images')
    parser.add_argument('--bits', type=int, help='set w_bits and a_bits of quant_cfg')
    parser.add_argument('--num-images', type=int, default=4, help='images to run')
    parser.add_argument('--size', type=int, default=256,
                        help='side of generated images (random init or no data)')
    parser.add_argument('--seed', type=int, default=0)
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    if (args.checkpoint is None) == (not args.random_init):
        parser.error('give either a CHECKPOINT or --random-init')
    if args.num_images < 1:
        parser.error(f'--num-images must be >= 1, got {args.num_images}')
    return args


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    quiet_logs(args.verbose)
    cfg = load_config(args.config, args.cfg_options)
    if args.random_init:
        model = random_calibrated_detector(cfg, args.bits, args.seed, args.size)
        images = [generated_images(args.num_images, args.size, args.seed) -
                  model.data_preprocessor.mean]
        source = 'generated images'
    else:
        model = build_quantized_detector(cfg, args.bits, args.seed)
        load_checkpoint(model, args.checkpoint, map_location='cpu')
        images, source = eval_images(cfg, model, args.num_images, args.size, args.seed)
    model.eval()
    engine = convert_detector(model)
    units = engine.head.output_units()
    # Per batch (val images may differ in size); statistics over all outputs together.
    runs = dict(int=[], float=[], fake_quant=[], integer_aware=[])
    progress = ProgressBar(2 * len(images))
    with torch.no_grad():
        for batch in images:
            runs['int'].append(engine(batch, 'int'))
            runs['float'].append(engine(batch, 'float'))
            runs['fake_quant'].append(
                model.bbox_head.raw_forward(model.neck(model.backbone(batch))))
            progress.update()
        set_integer_aware(model)
        sync_engine_units(model)
        for batch in images:
            runs['integer_aware'].append(
                model.bbox_head.raw_forward(model.neck(model.backbone(batch))))
            progress.update()
    print()
    kinds = range(len(units))
    int_out, sim_out, fake_quant, integer_aware = ([merge_batches(outs, k) for k in kinds]
                                                   for outs in runs.values())
    out_units = [list(units[k]) * len(images) for k in kinds]
    exact = exact_agreement(int_out, sim_out)
    vs_fq = code_agreement(int_out, fake_quant, out_units)
    vs_aware = code_agreement(int_out, integer_aware, out_units)
    dtypes = sorted({str(t.dtype) for kind in int_out for t in kind})
    result = dict(
        config=osp.basename(args.config),
        bits=args.bits,
        images=sum(int(batch.shape[0]) for batch in images),
        equal_fraction=exact['equal_fraction'],
        max_abs_diff=exact['max_abs_diff'],
        num_elements=exact['num_elements'],
        vs_fakequant_equal_fraction=vs_fq['equal_fraction'],
        vs_fakequant_max_lsb=vs_fq['max_lsb'],
        vs_fakequant_mean_lsb=vs_fq['mean_lsb'],
        vs_fakequant_relative_error=vs_fq['relative_error'],
        vs_integer_aware_equal_fraction=vs_aware['equal_fraction'],
        vs_integer_aware_max_lsb=vs_aware['max_lsb'],
        output_dtypes=dtypes,
        passed=exact['equal_fraction'] == 1.0 and dtypes == ['torch.int64'])
    print(f'{result["config"]}: {result["images"]} {source}, '
          f'{sum(1 for _ in engine.modules())} engine modules, outputs {", ".join(dtypes)}')
    print(f'integer == simulation: {100 * exact["equal_fraction"]:.2f}% of '
          f'{exact["num_elements"]} head outputs (max |diff| {exact["max_abs_diff"]:g})')
    print(f'integer vs fake-quant: {100 * vs_fq["equal_fraction"]:.2f}% equal codes, '
          f'max {vs_fq["max_lsb"]:.1f} LSB, mean {vs_fq["mean_lsb"]:.2f} LSB, relative error '
          f'{100 * vs_fq["relative_error"]:.2f}% (for information: plain fake quantization does '
          f'not simulate the integer bias rounding and add alignment, so these differ)')
    print(f'integer vs integer-aware fake-quant: {100 * vs_aware["equal_fraction"]:.2f}% equal '
          f'codes, max {vs_aware["max_lsb"]:.2f} LSB (IntegerAwareQATHook\'s forward)')
    print(verdict(result['passed'], f'the int64 engine equals its float64 simulation on '
                  f'{100 * exact["equal_fraction"]:.2f}% of {exact["num_elements"]} head outputs',
                  '100%, int64 outputs'))
    print(json.dumps(result))
    return result


if __name__ == '__main__':
    sys.exit(run_check(main))
