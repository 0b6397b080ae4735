"""Evaluate a checkpoint with mmaqd's modules registered (COCO bbox mAP by default).

mmdet's tools/test.py flags (``--work-dir``, ``--out``, ``--show``, ``--show-dir``,
``--wait-time``, ``--cfg-options``, ``--launcher``) except ``--tta`` (run mmdet's own
tools/test.py for test-time augmentation: the configs work there unchanged), plus
``--metrics-out`` to save the metrics as JSON, ``--integer`` for the integer engine
and CPU DDP under torchrun. The last lines printed are the bbox mAP and AP50.

Example::

    python tools/test.py configs/aqd/retinanet_r18_fpn_aqd-fp32_synthetic.py \
        work_dirs/retinanet_r18_fpn_aqd-fp32_synthetic/iter_1000.pth
"""
import argparse
import json
import os
import os.path as osp
from typing import Optional, Sequence

from mmengine.config import Config, DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

import mmaqd  # noqa: F401  (registers mmaqd's modules and its checkpoint loader)
from mmaqd.engine.cpu_distributed import cpu_distributed
from mmdet.engine.hooks.utils import trigger_visualization_hook
from mmdet.utils import setup_cache_size_limit_of_dynamo


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test a detector (mmaqd)')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save logs and metrics')
    parser.add_argument('--out', help='dump predictions to this pickle file')
    parser.add_argument('--metrics-out', help='write the metrics to this JSON file')
    parser.add_argument('--show', action='store_true', help='show prediction results')
    parser.add_argument('--show-dir', help='directory (under work_dir/timestamp) where '
                        'painted images are saved')
    parser.add_argument('--wait-time', type=float, default=2,
                        help='the interval of --show (s)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value pairs')
    parser.add_argument('--integer', nargs='?', const='int',
                        choices=['int', 'float', 'onnx', 'onnx-qdq'],
                        help='evaluate the integer engine of a quantized detector ("float": '
                        'its float64 deploy-mode simulation; "onnx": its integer-kernel ONNX '
                        'export, the deployed file; "onnx-qdq": its QDQ export; both in '
                        'onnxruntime)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'checkpoint {args.checkpoint!r} does not exist')
    setup_cache_size_limit_of_dynamo()
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = args.checkpoint
    if args.show or args.show_dir:
        cfg = trigger_visualization_hook(cfg, args)
    with cpu_distributed(cfg):
        if args.integer:
            cfg.custom_hooks = list(cfg.get('custom_hooks') or []) + [
                dict(type='IntegerInferenceHook', arith=args.integer)]
        runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
        if args.out is not None:
            if not args.out.endswith(('.pkl', '.pickle')):
                raise ValueError(f'--out must be a .pkl or .pickle file, got {args.out!r}')
            runner.test_evaluator.metrics.append(
                dict(type='DumpDetResults', out_file_path=args.out))
        metrics = runner.test()
        if args.metrics_out and runner.rank == 0:
            os.makedirs(osp.dirname(osp.abspath(args.metrics_out)), exist_ok=True)
            with open(args.metrics_out, 'w') as f:
                json.dump({k: float(v) for k, v in metrics.items()}, f, indent=2)
        if 'coco/bbox_mAP' in metrics:
            print(f'bbox mAP: {metrics["coco/bbox_mAP"]:.3f}  '
                  f'AP50: {metrics["coco/bbox_mAP_50"]:.3f}')
        elif not metrics:
            print('no metrics: the model made no detection above the score threshold '
                  '(model.test_cfg.score_thr)')
    return metrics


if __name__ == '__main__':
    main()
