"""Per-pyramid-level statistics of the head's norm inputs (AQD paper, Fig. 2).

AQD motivates multi-level BN by how differently the features of the pyramid
levels are distributed when the head's convs are shared. This tool runs a trained
detector on val images (generated digits images if the data is missing), records
the input of every norm in the head towers per level, and reports per level the
channel means and standard deviations; ``--out`` plots them for one norm.

The last line printed is one JSON object.

Example::

    python tools/analysis/level_stats.py configs/aqd/retinanet_r18_fpn_aqd-w4a4_synthetic.py \
        CKPT --out level_stats.png
"""
import argparse
import json
import os.path as osp
from collections import defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.utils import ProgressBar

from mmaqd.apis import eval_images, load_trained, quiet_logs, trained_model_parser
from mmaqd.models.layers.level_conv_module import LevelConvModule

Moments = Dict[Tuple[str, int], List[torch.Tensor]]


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = trained_model_parser('Per-level head norm input statistics')
    parser.add_argument('--out', help='PNG to plot into')
    parser.add_argument('--norm', help='head norm to plot (default: the first one)')
    parser.add_argument('--num-images', type=int, default=8, help='images to run (default 8)')
    return parser.parse_args(argv)


def collect(model: torch.nn.Module, images: Sequence[torch.Tensor]) -> Dict[str, dict]:
    """Per head norm and level: channel means and standard deviations of the norm's input.

    Args:
        model (nn.Module): A detector whose head towers are :class:`LevelConvModule`.
        images (list[Tensor]): Preprocessed batches.

    Returns:
        dict: ``{norm name: {level: {'mean': (C,), 'std': (C,)}}}``.
    """
    sums: Dict[Tuple[str, int], torch.Tensor] = defaultdict(lambda: 0)
    blocks = {name: m for name, m in model.bbox_head.named_modules()
              if isinstance(m, LevelConvModule) and m.with_norm}
    if not blocks:
        raise ValueError('the head has no LevelConvModule with a norm: nothing to record')
    current: Dict[str, int] = {}
    handles = []
    for name, block in blocks.items():
        def remember(module, args, name=name):
            current[name] = int(args[1] if len(args) > 1 else 0)

        def record(module, args, out, name=name):
            x = args[0].detach().double()
            key = (f'bbox_head.{name}.norm', current[name])
            count = x.numel() // x.shape[1]
            moments = torch.stack([torch.full((x.shape[1], ), float(count), dtype=torch.float64),
                                   x.sum((0, 2, 3)), (x * x).sum((0, 2, 3))])
            sums[key] = sums[key] + moments
        handles.append(block.register_forward_pre_hook(remember))
        handles.append(block.norm.register_forward_hook(record))
    progress = ProgressBar(len(images))
    try:
        with torch.no_grad():
            for batch in images:
                model.bbox_head(model.neck(model.backbone(batch)))
                progress.update()
    finally:
        print()
        for handle in handles:
            handle.remove()
    stats: Dict[str, dict] = defaultdict(dict)
    for (norm, level), (count, total, squares) in sorted(sums.items()):
        mean = total / count
        stats[norm][level] = {'mean': mean, 'std': (squares / count - mean**2).clamp_min(0).sqrt()}
    return dict(stats)


def summarise(stats: Dict[str, dict]) -> Dict[str, dict]:
    """Per norm and level: the average channel mean and std, and their spread over levels.

    ``level_spread`` is the std over levels of the channel means, averaged over
    channels, divided by the average channel std: how far apart the levels' BN
    statistics are in units of the features' own spread (0: identical levels).

    Args:
        stats (dict): From :func:`collect`.

    Returns:
        dict: Per norm: ``levels`` (per level ``mean_of_means``, ``mean_of_stds``),
        ``level_spread`` and ``std_ratio_max_min`` (largest over smallest level std).
    """
    out = {}
    for norm, levels in stats.items():
        means = torch.stack([levels[k]['mean'] for k in sorted(levels)])
        stds = torch.stack([levels[k]['std'] for k in sorted(levels)])
        out[norm] = {
            'levels': {int(k): {'mean_of_means': float(levels[k]['mean'].mean()),
                                'mean_of_stds': float(levels[k]['std'].mean())}
                       for k in sorted(levels)},
            'level_spread': float(means.std(0).mean() / stds.mean().clamp_min(1e-12)),
            'std_ratio_max_min': float(stds.mean(1).max() / stds.mean(1).min().clamp_min(1e-12)),
        }
    return out


def plot(stats: Dict[str, dict], norm: str, path: str, title: str) -> None:
    """Plot the channel means and stds of one norm's input, one line per level.

    Args:
        stats (dict): From :func:`collect`.
        norm (str): The norm to plot.
        path (str): PNG file to write.
        title (str): Figure title.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    levels = stats[norm]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    order = torch.argsort(levels[min(levels)]['mean'])
    for level in sorted(levels):
        for ax, key in zip(axes, ('mean', 'std')):
            ax.plot(levels[level][key][order].numpy(), label=f'level {level}', linewidth=1)
    for ax, key in zip(axes, ('mean', 'std')):
        ax.set_xlabel('channel (sorted by the finest level\'s mean)')
        ax.set_ylabel(f'channel {key} of the norm input')
        ax.legend(fontsize=8)
    fig.suptitle(f'{title}: {norm}', fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    quiet_logs(args.verbose)
    cfg, model = load_trained(args.config, args.checkpoint, args.cfg_options)
    images, source = eval_images(cfg, model, args.num_images, 256)
    stats = collect(model, images)
    summary = summarise(stats)
    norm = args.norm or next(iter(stats))
    if norm not in stats:
        raise KeyError(f'--norm {norm!r} is not a head norm; choose from {sorted(stats)}')
    if args.out:
        plot(stats, norm, args.out, osp.basename(args.config))
    for name, entry in summary.items():
        print(f'{name}: level spread {entry["level_spread"]:.3f}, std ratio (max/min level) '
              f'{entry["std_ratio_max_min"]:.2f}')
    result = dict(config=osp.basename(args.config), source=source, plotted=norm,
                  out=args.out, norms=summary)
    print(json.dumps(result))
    return result


if __name__ == '__main__':
    main()
