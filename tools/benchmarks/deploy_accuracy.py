"""bbox mAP of the deployed file vs the integer engine vs the fake-quant model, per model.

For each ``CONFIG=CHECKPOINT`` pair it runs, as subprocesses on the first
``--num-images`` val images (one subset annotation file):

- ``tools/test.py CONFIG CKPT`` (fake-quant), ``--integer`` (the int64 engine) and
  ``--integer onnx`` (the integer-kernel file in onnxruntime);
- ``tools/export_onnx.py CONFIG CKPT`` for the head-output agreement with the engine
  and the integer-conv check.

Rows are cached in the output JSON (a finished row is not run again; the commands
that made them are listed there) and written after every model.

Example::

    python tools/benchmarks/deploy_accuracy.py \
        configs/aqd/retinanet_r18_fpn_aqd-w4a4_synthetic.py=work_dirs/retinanet_r18_fpn_aqd-w4a4_synthetic/iter_300.pth \
        --out docs/results/deploy_accuracy.json
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import tempfile
from typing import List, Optional, Sequence

from mmaqd.apis import load_config
from mmaqd.datasets import write_subset

#: The repository root (the tools run from there).
ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
#: test.py's ``--integer`` values and the names of their rows.
METHODS = {'fake_quant': [], 'engine': ['--integer'], 'kernels': ['--integer', 'onnx']}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Deployed-file mAP (mmaqd)')
    parser.add_argument('models', nargs='+', help='CONFIG=CHECKPOINT pairs')
    parser.add_argument('--num-images', type=int, default=100,
                        help='first val images evaluated (default 100)')
    parser.add_argument('--out', required=True, help='results JSON (also the cache)')
    args = parser.parse_args(argv)
    for pair in args.models:
        if '=' not in pair:
            parser.error(f'{pair!r} is not CONFIG=CHECKPOINT')
    return args


def run(cmd: List[str]) -> str:
    """Run a tool; its stdout. Raises with its stderr tail if it fails."""
    done = subprocess.run([sys.executable] + cmd, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f'{" ".join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}')
    return done.stdout


def main(argv: Optional[Sequence[str]] = None) -> list:
    args = parse_args(argv)
    rows, commands = [], []
    if osp.isfile(args.out):
        with open(args.out) as f:
            saved = json.load(f)
        rows, commands = saved['rows'], saved['commands']
    command = ('python tools/benchmarks/deploy_accuracy.py ' + ' '.join(args.models) +
               f' --num-images {args.num_images} --out {args.out}')
    if command not in commands:
        commands.append(command)
    done = {(r['config'], r['checkpoint'], r['method'], r['images']) for r in rows}
    work = tempfile.mkdtemp(prefix='mmaqd_deploy_acc_')
    for pair in args.models:
        config, checkpoint = pair.split('=', 1)
        cfg = load_config(config)
        dataset = cfg.val_dataloader.dataset
        subset = osp.join(work, f'val_first{args.num_images}.json')
        write_subset(osp.join(dataset.data_root, dataset.ann_file), subset, args.num_images)
        options = ['--cfg-options', f'test_dataloader.dataset.ann_file={subset}',
                   f'test_evaluator.ann_file={subset}']
        quant = cfg.model.get('quant_cfg', {})
        base = {'config': config, 'checkpoint': checkpoint, 'images': args.num_images,
                'bits': quant.get('w_bits'),
                'detector': 'fcos' if 'fcos' in osp.basename(config) else 'retinanet'}
        for method, flags in METHODS.items():
            if (config, checkpoint, method, args.num_images) in done:
                continue
            metrics_file = osp.join(work, f'{method}.json')
            run(['tools/test.py', config, checkpoint, '--work-dir', work, *flags,
                 '--metrics-out', metrics_file, *options])
            with open(metrics_file) as f:
                metrics = json.load(f)
            rows.append(dict(base, method=method, mAP=metrics.get('coco/bbox_mAP'),
                             AP50=metrics.get('coco/bbox_mAP_50')))
            print(json.dumps(rows[-1]), flush=True)
        if (config, checkpoint, 'agreement', args.num_images) not in done:
            out = run(['tools/export_onnx.py', config, checkpoint,
                       osp.join(work, 'model.onnx'), '--num-images', '4'])
            result = json.loads(out.strip().splitlines()[-1])
            rows.append(dict(base, method='agreement', **{
                k: result[k] for k in ('vs_engine_equal_fraction', 'vs_engine_relative_error',
                                       'vs_engine_max_lsb', 'integer_convs', 'float_convs',
                                       'conv_nodes', 'convs', 'file_bytes', 'passed')}))
            print(json.dumps(rows[-1]), flush=True)
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            json.dump({'commands': commands, 'rows': rows}, f, indent=1)
            f.write('\n')
    return rows


if __name__ == '__main__':
    main()
