"""Forward time of the integer engine vs the fake-quant model vs the FP model, side by side.

All three run in one process on the same input, interleaved repeat by repeat, so
the ratios hold even on a busy machine. The engine is a correctness reference
(int64 tensors on PyTorch's generic integer kernels), not a fast runtime; the
breakdown shows where its time goes.

Example:
    python tools/benchmarks/integer_engine.py \
        configs/aqd/retinanet_r18_fpn_aqd-w4a4_synthetic.py --repeats 5
"""
import argparse
import os.path as osp
import statistics
import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Dict, Optional, Sequence

import torch

from mmaqd.apis import build_quantized_detector, calibrate, generated_images, load_config
from mmaqd.integer import convert_detector
from mmaqd.integer.layers import OPS
from mmaqd.utils import interleaved_times, median_ratio

def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Integer engine speed (mmaqd)')
    parser.add_argument('config', help='config of a quantized detector')
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--size', type=int, default=256, help='image side')
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--out', help='also write the report to this file')
    return parser.parse_args(argv)


@contextmanager
def op_timers(engine: torch.nn.Module, totals: Dict[str, float]):
    """Accumulate the time spent in each op of the op table (forward hooks on the engine)."""
    starts = {}

    def before(module, args):
        starts[id(module)] = time.perf_counter()

    def after(module, args, output):
        totals[module.op] += time.perf_counter() - starts.pop(id(module))

    op_types = tuple(OPS.values())
    handles = [h for m in engine.modules() if isinstance(m, op_types)
               for h in (m.register_forward_pre_hook(before), m.register_forward_hook(after))]
    try:
        yield totals
    finally:
        for handle in handles:
            handle.remove()


def main(argv: Optional[Sequence[str]] = None) -> str:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    model = build_quantized_detector(load_config(args.config))
    fp_model = build_quantized_detector(load_config(args.config), bits=32)
    mean = model.data_preprocessor.mean
    calibrate(model, generated_images(2, args.size, 1) - mean, 2)
    model.eval()
    # same weights; the quantizers' state (and its bit widths) stays behind
    fp_model.load_state_dict({k: v for k, v in model.state_dict().items()
                              if not k.endswith('._extra_state')}, strict=False)
    fp_model.eval()
    engine = convert_detector(model)
    x = generated_images(args.batch, args.size, 2) - mean

    runs = {
        'fake-quant': lambda: model.bbox_head.raw_forward(model.neck(model.backbone(x))),
        'FP': lambda: fp_model.bbox_head(fp_model.neck(fp_model.backbone(x))),
        'integer engine (int64)': lambda: engine(x, 'int'),
        'float64 simulation': lambda: engine(x, 'float'),
    }
    with torch.no_grad():
        times = interleaved_times(runs, args.repeats)
        breakdown = defaultdict(float)
        with op_timers(engine, breakdown):
            start = time.perf_counter()
            engine(x, 'int')
            total = time.perf_counter() - start
    lines = [f'config: {osp.basename(args.config)}; input {args.batch}x3x{args.size}x{args.size}; '
             f'{args.threads} threads; median of {args.repeats} interleaved repeats '
             '(vs FP: median of per-repeat ratios)',
             f'{"model":<26}{"median ms":>10}{"vs FP":>8}']
    for name in runs:
        median = statistics.median(times[name])
        ratio = median_ratio(times, name, 'FP')
        lines.append(f'{name:<26}{1000 * median:>10.1f}{ratio:>7.2f}x')
    lines.append('integer engine time by operation (one forward):')
    for name, seconds in sorted(breakdown.items(), key=lambda kv: -kv[1]):
        lines.append(f'  {name:<22}{100 * seconds / total:>6.1f}%')
    glue = 100 * (1 - sum(breakdown.values()) / total)
    lines.append(f'  {"other (python glue)":<22}{glue:>6.1f}%')
    report = '\n'.join(lines)
    print(report)
    if args.out:
        with open(args.out, 'w') as f:
            f.write(f'$ python tools/benchmarks/integer_engine.py {args.config} '
                    f'--repeats {args.repeats} --size {args.size} --batch {args.batch} '
                    f'--threads {args.threads}\n{report}\n')
    return report


if __name__ == '__main__':
    main()
