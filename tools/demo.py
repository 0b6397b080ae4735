"""The end-to-end demo behind ``make demo``: data -> FP -> AQD 4-bit -> integer -> mAP.

Stages, each timed: prepare the data set (generated, or tiled from the deepforest
wheel) unless it is already there, train the full-precision AQD-architecture
RetinaNet-R18 from scratch, fine-tune the fully-quantized 4-bit model from it,
evaluate both with mmdet's CocoMetric, convert the 4-bit model to the integer
engine, check it against its float64 simulation, evaluate it, and print all
bbox mAPs side by side.

Example::

    python tools/demo.py                    # generated digits set (default)
    python tools/demo.py --data neon-trees  # the real NEON tree-crown data
"""
import argparse
import json
import os.path as osp
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

from mmaqd.datasets import write_subset

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DATASETS = {
    'synthetic': dict(
        root='data/synthetic',
        prepare=['tools/dataset_converters/synthetic.py', '--out', 'data/synthetic'],
        fp_config='configs/aqd/retinanet_r18_fpn_aqd-fp32_synthetic.py',
        q_config='configs/aqd/retinanet_r18_fpn_aqd-w4a4_synthetic.py'),
    'neon-trees': dict(
        root='data/neon_trees',
        prepare=['tools/dataset_converters/neon_trees.py', '--out', 'data/neon_trees'],
        fp_config='configs/aqd/retinanet_r18_fpn_aqd-fp32_neon-trees.py',
        q_config='configs/aqd/retinanet_r18_fpn_aqd-w4a4_neon-trees.py'),
}


def run_stage(name: str, cmd: List[str], timings: Dict[str, float]) -> None:
    """Run one stage as a subprocess in the repository root and time it."""
    print(f'\n=== {name}: {" ".join(cmd)}', flush=True)
    start = time.perf_counter()
    subprocess.run([sys.executable] + cmd, cwd=ROOT, check=True)
    timings[name] = time.perf_counter() - start


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--data', choices=sorted(DATASETS), default='synthetic')
    parser.add_argument('--work-dir', default=None,
                        help='defaults to work_dirs/demo/<data>')
    parser.add_argument('--only-data', action='store_true', help='prepare the data and stop')
    parser.add_argument('--integer-images', type=int, default=100,
                        help='val images on which the integer engine is evaluated')
    args = parser.parse_args(argv)
    spec = DATASETS[args.data]
    work_dir = args.work_dir or osp.join('work_dirs', 'demo', args.data)
    timings: Dict[str, float] = {}

    if osp.isfile(osp.join(ROOT, spec['root'], 'annotations', 'val.json')):
        print(f'data: {spec["root"]} exists, not regenerated')
    else:
        run_stage('prepare data', spec['prepare'], timings)
    if args.only_data:
        return

    fp_ckpt, fp_metrics = train_and_test('FP32', spec['fp_config'],
                                         osp.join(work_dir, 'fp32'), [], timings)
    q_dir = osp.join(work_dir, 'w4a4')
    q_ckpt, q_metrics = train_and_test('AQD w4a4', spec['q_config'], q_dir,
                                       [f'load_from={fp_ckpt}'], timings)
    verify = verify_integer(spec['q_config'], q_ckpt, timings)
    # The integer engine is a slow reference (int64 kernels): it and, for a like-for-like
    # comparison, the fake-quant model are evaluated on the first val images only.
    subset_ann = osp.abspath(osp.join(ROOT, q_dir, f'val_first{args.integer_images}.json'))
    write_subset(osp.join(ROOT, spec['root'], 'annotations', 'val.json'), subset_ann,
                 args.integer_images)
    subset = ['--cfg-options', f'test_dataloader.dataset.ann_file={subset_ann}',
              f'test_evaluator.ann_file={subset_ann}']
    sub_metrics = {}
    for name, extra in (('fake-quant', []), ('integer', ['--integer'])):
        metrics_file = osp.join(q_dir, f'test_metrics_{name}_{args.integer_images}.json')
        run_stage(f'test {name} ({args.integer_images} img)', [
            'tools/test.py', spec['q_config'], q_ckpt, '--work-dir', q_dir, *extra,
            '--metrics-out', metrics_file, *subset
        ], timings)
        with open(osp.join(ROOT, metrics_file)) as f:
            sub_metrics[name] = json.load(f)

    print(f'\n=== mmaqd demo on {args.data}')
    for stage, seconds in timings.items():
        print(f'{stage:16s} {seconds / 60:6.1f} min')
    print(f'integer == simulation: {100 * verify["equal_fraction"]:.2f}% '
          f'({verify["num_elements"]} head outputs of {verify["images"]} val images); vs '
          f'fake-quant: {100 * verify["vs_fakequant_relative_error"]:.2f}% relative error')
    n = args.integer_images
    for name, metrics in (('FP32', fp_metrics), ('AQD w4a4', q_metrics),
                          (f'w4a4 fake-quant, first {n} val images', sub_metrics['fake-quant']),
                          (f'w4a4 integer, first {n} val images', sub_metrics['integer'])):
        if 'coco/bbox_mAP' in metrics:
            print(f'{name:38s} bbox mAP {metrics["coco/bbox_mAP"]:.3f}  '
                  f'AP50 {metrics["coco/bbox_mAP_50"]:.3f}')
        else:
            print(f'{name:38s} no detection above the score threshold')


def verify_integer(config: str, checkpoint: str, timings: Dict[str, float]) -> dict:
    """Run tools/verify_integer.py on a few val images; return its JSON summary."""
    cmd = ['tools/verify_integer.py', config, checkpoint, '--num-images', '4']
    print(f'\n=== verify integer: {" ".join(cmd)}', flush=True)
    start = time.perf_counter()
    done = subprocess.run([sys.executable] + cmd, cwd=ROOT, capture_output=True, text=True)
    timings['verify integer'] = time.perf_counter() - start
    print(done.stdout[-2000:], end='', flush=True)
    if done.returncode != 0:
        print(done.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f'verify_integer failed with exit code {done.returncode}')
    return json.loads(done.stdout.strip().splitlines()[-1])


def train_and_test(name: str, config: str, work_dir: str, options: List[str],
                   timings: Dict[str, float]) -> Tuple[str, dict]:
    """Train ``config`` into ``work_dir``, test its last checkpoint, return both."""
    extra = ['--cfg-options', *options] if options else []
    run_stage(f'train {name}', ['tools/train.py', config, '--work-dir', work_dir, *extra],
              timings)
    with open(osp.join(ROOT, work_dir, 'last_checkpoint')) as f:
        checkpoint = f.read().strip()
    metrics_file = osp.join(work_dir, 'test_metrics.json')
    run_stage(f'test {name}', [
        'tools/test.py', config, checkpoint, '--work-dir', work_dir, '--metrics-out',
        metrics_file
    ], timings)
    with open(osp.join(ROOT, metrics_file)) as f:
        return checkpoint, json.load(f)


if __name__ == '__main__':
    main()
