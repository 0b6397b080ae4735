"""What quantization costs a detector, measured side by side in one process.

- Train step: one step (forward, losses, backward, update with each config's own
  optimizer wrapper, e.g. AdamW with gradient clipping) of the FP detector and of
  each quantized one on the same generated batch, taking turns repeat by repeat.
- Forward: the FP model, each fake-quant model, its integer engine (int64) and the
  engine's float64 simulation on the same image, taking turns.
- Sizes: the FP32 weights (the state dict as ``torch.save`` writes it) against
  each model's packed integer export (``tools/export_integer.py``'s format) and,
  if ``onnx`` is installed, its QDQ ONNX file.

Ratios are medians of per-repeat ratios, so they hold on a shared machine; the
absolute times do not. Forward times and sizes are measured first, on the
weights as loaded, the train steps last. Without checkpoints the models are
randomly initialised (the quantizers calibrated on generated images): times and
sizes do not depend on the weights' values.

The last line printed is one JSON object.

Example::

    python tools/benchmarks/detector_costs.py \
        configs/aqd/retinanet_r18_fpn_aqd-fp32_synthetic.py \
        configs/aqd/retinanet_r18_fpn_aqd-w4a4_synthetic.py \
        configs/aqd/retinanet_r18_fpn_aqd-w2a2_synthetic.py --repeats 5
"""
import argparse
import io
import os.path as osp
import statistics
import tempfile
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper

from mmaqd.apis import (build_detector, calibrate, emit_result, generated_images,
                        load_trained)
from mmaqd.integer import convert_detector
from mmaqd.integer.detector import head_outputs
from mmaqd.integer.export import export_integer
from mmaqd.utils import interleaved_times, median_ratio
from mmdet.testing import demo_mm_inputs


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Costs of quantized detectors (mmaqd)')
    parser.add_argument('configs', nargs='+',
                        help='the FP detector\'s config, then one or more quantized ones')
    parser.add_argument('--checkpoints', nargs='+',
                        help='trained checkpoints, one per config in the same order')
    parser.add_argument('--repeats', type=int, default=5, help='timed rounds')
    parser.add_argument('--batch', type=int, default=8, help='training batch size')
    parser.add_argument('--size', type=int, default=256, help='image side')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    parser.add_argument('--out', help='also write the JSON result to this file')
    return parser.parse_args(argv)


def load_models(configs: Sequence[str], checkpoints: Optional[Sequence[str]],
                size: int) -> Tuple[Dict[str, torch.nn.Module], Dict[str, Config]]:
    """Build the detectors; load checkpoints, else calibrate the quantizers on images.

    Args:
        configs (list[str]): FP config first, then quantized ones.
        checkpoints (list[str], optional): One per config.
        size (int): Side of the calibration images.

    Returns:
        tuple: Short name (``'FP'`` or ``'w{bits}a{bits}'``) -> model, and the same
        names -> their configs.

    Raises:
        ValueError: If the counts differ, the first config is quantized or a later
            one is not.
    """
    if checkpoints is not None and len(checkpoints) != len(configs):
        raise ValueError(f'{len(configs)} configs but {len(checkpoints)} checkpoints')
    models, cfgs = {}, {}
    for i, path in enumerate(configs):
        cfg = Config.fromfile(path)
        quant = cfg.model.get('quant_cfg')
        if (i == 0) != (quant is None or quant.get('w_bits', 32) >= 32):
            raise ValueError(f'{path}: the first config must be the FP detector and the '
                             'others quantized ones')
        name = 'FP' if i == 0 else f'w{quant["w_bits"]}a{quant["a_bits"]}'
        if name in models:
            raise ValueError(f'{path}: two configs named {name}')
        if checkpoints is not None:
            cfg, model = load_trained(path, checkpoints[i])
        else:
            torch.manual_seed(0)
            model = build_detector(cfg)
            if i > 0:
                calibrate(model, generated_images(2, size, 1) - model.data_preprocessor.mean, 1)
        models[name], cfgs[name] = model, cfg
    return models, cfgs


def train_step_times(models: Dict[str, torch.nn.Module], cfgs: Dict[str, Config], batch: int,
                     size: int, repeats: int) -> Dict[str, List[float]]:
    """Seconds of one train step of each model on the same generated batch, interleaved.

    Each model steps with the optimizer wrapper its config trains with.
    """
    data = demo_mm_inputs(batch_size=batch, image_shapes=(3, size, size),
                          num_items=[4] * batch, num_classes=10)
    steps = {}
    for name, model in models.items():
        model.train()
        wrapper = build_optim_wrapper(model, cfgs[name].optim_wrapper)
        steps[name] = (lambda m, w: lambda: m.train_step(data, w))(model, wrapper)
    return interleaved_times(steps, repeats)


def forward_times(models: Dict[str, torch.nn.Module], engines: Dict[str, torch.nn.Module],
                  size: int, repeats: int) -> Dict[str, List[float]]:
    """Seconds of one forward (backbone, neck, head) of every model and engine, interleaved."""
    fp = models['FP']
    x = generated_images(1, size, 2) - fp.data_preprocessor.mean
    runs = {'FP': lambda: fp.bbox_head(fp.neck(fp.backbone(x)))}
    for name, engine in engines.items():
        model = models[name]
        runs[f'{name} fake-quant'] = (
            lambda m: lambda: m.bbox_head.raw_forward(m.neck(m.backbone(x))))(model)
        runs[f'{name} integer engine'] = (lambda e: lambda: e(x, 'int'))(engine)
        runs[f'{name} float64 simulation'] = (lambda e: lambda: e(x, 'float'))(engine)
    for model in models.values():
        model.eval()
    with torch.no_grad():
        return interleaved_times(runs, repeats)


def file_sizes(models: Dict[str, torch.nn.Module], engines: Dict[str, torch.nn.Module],
               size: int) -> Dict[str, int]:
    """Bytes of the FP32 weights and of each quantized model's exports."""
    buffer = io.BytesIO()
    torch.save(models['FP'].state_dict(), buffer)
    sizes = {'FP fp32 weights': buffer.getbuffer().nbytes}
    image = torch.zeros(1, 3, size, size)
    try:
        from mmaqd.integer.onnx_export import export_onnx
    except ImportError:
        export_onnx = None
    with tempfile.TemporaryDirectory() as tmp:
        for name, engine in engines.items():
            path = osp.join(tmp, f'{name}.int.pth')
            export_integer(engine, path, image)
            sizes[f'{name} integer export'] = osp.getsize(path)
            if export_onnx is not None:
                path = osp.join(tmp, f'{name}.onnx')
                kinds = head_outputs(models[name].bbox_head)
                try:
                    export_onnx(engine, path, image, kinds)
                    sizes[f'{name} onnx'] = osp.getsize(path)
                except ImportError:  # onnx missing: the deploy extra is optional
                    export_onnx = None
    return sizes


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    models, cfgs = load_models(args.configs, args.checkpoints, args.size)
    for model in models.values():
        model.eval()
    engines = {name: convert_detector(m) for name, m in models.items() if name != 'FP'}
    forward = forward_times(models, engines, args.size, args.repeats)
    sizes = file_sizes(models, engines, args.size)
    train = train_step_times(models, cfgs, args.batch, args.size, args.repeats)
    result = dict(
        command='python tools/benchmarks/detector_costs.py ' + ' '.join(
            [osp.relpath(c) for c in args.configs]
            + (['--checkpoints'] + [osp.relpath(c) for c in args.checkpoints]
               if args.checkpoints else [])
            + ['--repeats', str(args.repeats), '--batch', str(args.batch), '--size',
               str(args.size)]),
        threads=torch.get_num_threads(), repeats=args.repeats,
        train_input=[args.batch, 3, args.size, args.size],
        forward_input=[1, 3, args.size, args.size],
        train_step_seconds={k: statistics.median(v) for k, v in train.items()},
        train_step_vs_fp={k: median_ratio(train, k, 'FP') for k in train if k != 'FP'},
        forward_seconds={k: statistics.median(v) for k, v in forward.items()},
        forward_vs_fp={k: median_ratio(forward, k, 'FP') for k in forward if k != 'FP'},
        file_bytes=sizes,
        file_vs_fp32={k: v / sizes['FP fp32 weights'] for k, v in sizes.items()})
    print(f'train step, batch {args.batch}x3x{args.size}x{args.size}, median of '
          f'{args.repeats} interleaved rounds, {result["threads"]} threads:')
    for name, seconds in result['train_step_seconds'].items():
        ratio = result['train_step_vs_fp'].get(name)
        print(f'  {name:<34}{seconds * 1e3:9.0f} ms' + (f'  {ratio:5.2f}x FP' if ratio else ''))
    print(f'forward, 1x3x{args.size}x{args.size}:')
    for name, seconds in result['forward_seconds'].items():
        ratio = result['forward_vs_fp'].get(name)
        print(f'  {name:<34}{seconds * 1e3:9.0f} ms' + (f'  {ratio:5.2f}x FP' if ratio else ''))
    print('file sizes:')
    for name, size in sizes.items():
        print(f'  {name:<34}{size / 1e6:9.2f} MB  {result["file_vs_fp32"][name]:.3f}x FP32')
    return emit_result(result, args.out)


if __name__ == '__main__':
    main()
