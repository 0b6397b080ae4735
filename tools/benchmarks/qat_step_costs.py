"""What integer-aware QAT and distillation cost a quantized fine-tune's train step.

Four train steps of one quantized config on the same generated batch, taking turns
repeat by repeat: plain fake quantization; integer-aware (the layers switched and
the engine's units taken from a conversion before the step, as
``IntegerAwareQATHook`` does every iteration); distilled from an FP teacher (the
``distill`` losses, the teacher's forward included); and both. Each step is the
config's own optimizer wrapper's. Ratios to the plain step are medians of per-
repeat ratios. The teacher is the FP config with random weights unless
``--teacher-ckpt`` is given: its cost does not depend on its weights.

The last line printed is one JSON object.

Example::

    python tools/benchmarks/qat_step_costs.py \
        configs/aqd/retinanet_r18_fpn_aqd-w2a2_synthetic.py \
        configs/aqd/retinanet_r18_fpn_aqd-fp32_synthetic.py --repeats 5
"""
import argparse
import os.path as osp
import tempfile
from typing import Callable, Dict, Optional, Sequence

import torch
from mmengine.optim import build_optim_wrapper

from mmaqd.apis import build_detector, calibrate, emit_result, generated_images, load_config
from mmaqd.integer import sync_engine_units
from mmaqd.quant import set_integer_aware
from mmaqd.utils import interleaved_times, median_ratio
from mmdet.testing import demo_mm_inputs

VARIANTS = ('plain', 'integer_aware', 'distilled', 'integer_aware+distilled')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train-step cost of integer-aware QAT and '
                                     'distillation (mmaqd)')
    parser.add_argument('config', help='a quantized detector\'s config')
    parser.add_argument('teacher_config', help='the FP detector\'s config (the teacher)')
    parser.add_argument('--teacher-ckpt', help='the teacher\'s checkpoint (default: random '
                        'weights, saved to a temporary file)')
    parser.add_argument('--repeats', type=int, default=5, help='timed rounds')
    parser.add_argument('--batch', type=int, default=8, help='training batch size')
    parser.add_argument('--size', type=int, default=256, help='image side')
    parser.add_argument('--out', help='also write the JSON result to this file')
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f'--repeats must be >= 1, got {args.repeats}')
    return args


def build_steps(config: str, teacher_config: str, teacher_ckpt: str, batch: int,
                size: int) -> Dict[str, Callable[[], None]]:
    """One train-step closure per :data:`VARIANTS`, all on the same generated batch."""
    data = demo_mm_inputs(batch_size=batch, image_shapes=(3, size, size),
                          num_items=[4] * batch, num_classes=10)
    steps = {}
    for variant in VARIANTS:
        cfg = load_config(config)
        if 'distilled' in variant:
            cfg.model.distill = dict(teacher_config=teacher_config, teacher_ckpt=teacher_ckpt)
        torch.manual_seed(0)
        model = build_detector(cfg)
        calibrate(model, generated_images(2, size, 1) - model.data_preprocessor.mean, 1)
        model.train()
        aware = 'integer_aware' in variant
        if aware:
            set_integer_aware(model)
        wrapper = build_optim_wrapper(model, cfg.optim_wrapper)

        def step(model=model, wrapper=wrapper, aware=aware) -> None:
            if aware:
                sync_engine_units(model)
            model.train_step(data, wrapper)

        steps[variant] = step
    return steps


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        teacher_ckpt = args.teacher_ckpt
        if teacher_ckpt is None:
            torch.manual_seed(0)
            teacher = build_detector(load_config(args.teacher_config))
            teacher_ckpt = osp.join(tmp, 'teacher.pth')
            torch.save({'state_dict': teacher.state_dict()}, teacher_ckpt)
        steps = build_steps(args.config, args.teacher_config, teacher_ckpt, args.batch,
                            args.size)
        times = interleaved_times(steps, args.repeats)  # its warm-up builds the teachers
    result = dict(
        config=osp.basename(args.config), teacher_config=osp.basename(args.teacher_config),
        batch=args.batch, size=args.size, repeats=args.repeats, threads=torch.get_num_threads(),
        seconds={name: sorted(t)[len(t) // 2] for name, t in times.items()},
        ratio_to_plain={name: median_ratio(times, name, 'plain') for name in VARIANTS})
    for name in VARIANTS:
        print(f'{name:26s} {result["seconds"][name]:6.2f} s per step, '
              f'{result["ratio_to_plain"][name]:.2f}x the plain step')
    return emit_result(result, args.out)


if __name__ == '__main__':
    main()
