"""Forward+backward time of a fake-quantized ResNet-18 against the float one.

Both models run side by side in one process, interleaved repeat by repeat, so
machine load affects them alike; the printed ratio is the median of the
per-repeat ratios (quantized / float).

Example::

    python tools/benchmarks/quant_overhead.py --repeats 5
    python tools/benchmarks/quant_overhead.py --repeats 5 --threads 1  # on a busy machine
    python tools/benchmarks/quant_overhead.py --quantizers LSQ Clip MinMax --profile
"""
import argparse
import statistics
from typing import Callable, Dict, List

import torch
from mmdet.models.backbones import ResNet
from mmdet.utils import register_all_modules
from torch import nn

import mmaqd.models.layers  # noqa: F401  (registers QConv / QBN)
from mmaqd.quant import QUANTIZER_TYPES
from mmaqd.utils import interleaved_times


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--repeats', type=int, default=5, help='timed repeats per model')
    parser.add_argument('--warmup', type=int, default=1, help='untimed repeats per model')
    parser.add_argument('--bits', type=int, default=4, help='weight and activation bits')
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--size', type=int, default=256, help='input height and width')
    parser.add_argument('--quantizers', nargs='+', default=['LSQ'],
                        choices=sorted(QUANTIZER_TYPES), help='quantizer types to compare')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch CPU threads; 1 gives steadier numbers on a busy machine, '
                        'where multi-threaded ops stall whenever one thread is descheduled')
    parser.add_argument('--profile', action='store_true',
                        help='profile one step of each quantized model and print the top ops')
    return parser.parse_args()


def build_models(bits: int, quantizers: List[str]) -> Dict[str, nn.Module]:
    """The float ResNet-18 and one fake-quantized copy per quantizer type."""
    models = {'float': ResNet(depth=18)}
    for quantizer in quantizers:
        models[quantizer] = ResNet(
            depth=18,
            conv_cfg=dict(type='QConv', w_bits=bits, a_bits=bits, quantizer=quantizer),
            norm_cfg=dict(type='QBN'))
    for model in models.values():
        model.train()
    return models


def make_step(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    """One forward+backward pass of ``model`` on ``x``."""

    def step() -> None:
        model.zero_grad(set_to_none=True)
        loss = sum(out.float().mean() for out in model(x))
        loss.backward()

    return step


def profile(name: str, step: Callable[[], None]) -> None:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    print(f'\n== profile: {name} (self CPU time, top 15) ==')
    print(prof.key_averages().table(sort_by='self_cpu_time_total', row_limit=15))


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    register_all_modules()
    torch.manual_seed(0)
    x = torch.rand(args.batch, 3, args.size, args.size)
    models = build_models(args.bits, args.quantizers)
    steps = {name: make_step(model, x) for name, model in models.items()}

    # The first (warm-up) pass also initialises the LSQ steps from data.
    times = interleaved_times(steps, args.repeats, args.warmup)

    print(f'ResNet-18, input {args.batch}x3x{args.size}x{args.size}, forward+backward, '
          f'{args.bits} bits, {args.repeats} repeats, {torch.get_num_threads()} threads')
    float_times = times['float']
    print(f'{"float":>8}: median {statistics.median(float_times) * 1e3:8.1f} ms')
    for name in args.quantizers:
        ratios = [q / f for q, f in zip(times[name], float_times)]
        # Interference only adds time, so the ratio of the best times is a second,
        # load-robust estimate next to the median of the per-repeat ratios.
        print(f'{name:>8}: median {statistics.median(times[name]) * 1e3:8.1f} ms, '
              f'ratio to float {statistics.median(ratios):.2f}x '
              f'(per repeat: {", ".join(f"{r:.2f}" for r in ratios)}; '
              f'best/best {min(times[name]) / min(float_times):.2f}x)')

    if args.profile:
        for name in ['float'] + args.quantizers:
            profile(name, steps[name])


if __name__ == '__main__':
    main()
