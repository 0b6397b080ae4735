"""The end-to-end demo behind ``make demo``: data -> FP training -> COCO mAP.

Stages, each timed: prepare the data set (generated, or tiled from the deepforest
wheel) unless it is already there, train the full-precision AQD-architecture
RetinaNet-R18 from scratch, evaluate it with mmdet's CocoMetric, and print bbox mAP.

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
from typing import Dict, List, Optional, Sequence

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DATASETS = {
    'synthetic': dict(
        root='data/synthetic',
        prepare=['tools/dataset_converters/synthetic.py', '--out', 'data/synthetic'],
        fp_config='configs/aqd/retinanet_r18_fpn_aqd-fp32_synthetic.py'),
    'neon-trees': dict(
        root='data/neon_trees',
        prepare=['tools/dataset_converters/neon_trees.py', '--out', 'data/neon_trees'],
        fp_config='configs/aqd/retinanet_r18_fpn_aqd-fp32_neon-trees.py'),
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

    fp_dir = osp.join(work_dir, 'fp32')
    run_stage('train FP32', ['tools/train.py', spec['fp_config'], '--work-dir', fp_dir],
              timings)
    with open(osp.join(ROOT, fp_dir, 'last_checkpoint')) as f:
        checkpoint = f.read().strip()
    metrics_file = osp.join(fp_dir, 'test_metrics.json')
    run_stage('test FP32', [
        'tools/test.py', spec['fp_config'], checkpoint, '--work-dir', fp_dir,
        '--metrics-out', metrics_file
    ], timings)
    with open(osp.join(ROOT, metrics_file)) as f:
        metrics = json.load(f)

    print(f'\n=== mmaqd demo on {args.data}')
    for stage, seconds in timings.items():
        print(f'{stage:14s} {seconds / 60:6.1f} min')
    if 'coco/bbox_mAP' in metrics:
        print(f'{"FP32":14s} bbox mAP {metrics["coco/bbox_mAP"]:.3f}  '
              f'AP50 {metrics["coco/bbox_mAP_50"]:.3f}')
    else:
        print(f'{"FP32":14s} no detection above the score threshold')


if __name__ == '__main__':
    main()
