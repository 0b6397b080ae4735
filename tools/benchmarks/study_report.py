"""Turn the study's results JSON into tables, the AQD goals, a plot and README's table.

Reads what ``tools/benchmarks/aqd_study.py`` wrote; writes ``docs/benchmarks.md``
(or ``--md``), the mAP-vs-bits PNG next to it, and replaces README's block between
``<!-- study:begin -->`` and ``<!-- study:end -->`` with the main table.

Example::

    python tools/benchmarks/study_report.py docs/results/benchmarks.json
"""
import argparse
import json
import os.path as osp
import statistics
from collections import defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
README_BEGIN, README_END = '<!-- study:begin -->', '<!-- study:end -->'
#: AQD's accuracy goals: how far below FP each bit width may be, in mAP (0.01 = 1 AP).
BIT_GOALS = {4: 0.0, 3: 0.01, 2: 0.02}
BITS_ORDER = (4, 3, 2)
#: The most a QAT train step may cost, relative to the FP step.
QAT_STEP_GOAL = 1.3

Key = Tuple[str, str, str, int]  # dataset, detector, method, bits


def aggregate(rows: Sequence[Dict]) -> Dict[Key, Dict[str, float]]:
    """mAP and AP50 per (dataset, detector, method, bits): mean, std and seed count.

    Args:
        rows (list[dict]): The results' rows.

    Returns:
        dict: ``key -> {'map', 'map_std', 'ap50', 'n'}``; ``map_std`` is the sample
        standard deviation over seeds (0 for one seed).
    """
    groups: Dict[Key, List[Dict]] = defaultdict(list)
    for row in rows:
        groups[(row['dataset'], row['detector'], row['method'], int(row['bits']))].append(row)
    out = {}
    for key, members in groups.items():
        maps = [m['metrics']['coco/bbox_mAP'] for m in members]
        ap50 = [m['metrics'].get('coco/bbox_mAP_50', float('nan')) for m in members]
        out[key] = dict(map=statistics.fmean(maps),
                        map_std=statistics.stdev(maps) if len(maps) > 1 else 0.0,
                        ap50=statistics.fmean(ap50), n=len(maps))
    return out


def seed_zero(rows: Sequence[Dict]) -> Dict[Key, Dict[str, float]]:
    """:func:`aggregate` of the seed-0 rows only (the single-seed rows' partners)."""
    return aggregate([r for r in rows if int(r['seed']) == 0])


def goals(rows: Sequence[Dict], costs: Optional[Dict] = None) -> List[Dict]:
    """Each AQD goal the results can judge: the numbers and whether it was met.

    Goals: w4 >= FP, w3 >= FP - 1 AP, w2 >= FP - 2 AP (means over seeds); AQD above the
    min-max baseline at each bit width and multi-level BN above shared BN and GN at
    2 bits (seed 0 against seed 0: the single-seed rows start from the seed-0 FP
    model); integer engine mAP equal to its float64 simulation's (at CocoMetric's 3
    decimals); a QAT train step at most 1.3 times the FP one.

    Args:
        rows (list[dict]): The results' rows.
        costs (dict, optional): ``detector_costs.py``'s result.

    Returns:
        list[dict]: ``goal``, ``value`` (text) and ``met`` (bool).
    """
    table = aggregate(rows)
    seed0 = seed_zero(rows)
    found = []
    setups = sorted({(d, det) for d, det, _, _ in table})
    for dataset, det in setups:
        fp = table.get((dataset, det, 'fp', 32))
        for bits, allowed in BIT_GOALS.items():
            aqd = table.get((dataset, det, 'aqd', bits))
            if fp and aqd:
                gap = fp['map'] - aqd['map']
                name = f'{dataset} {det} w{bits}a{bits} >= FP - {allowed * 100:g} AP'
                found.append(dict(goal=name,
                                  value=f'{aqd["map"]:.3f} vs FP {fp["map"]:.3f} '
                                        f'({-gap * 100:+.1f} AP)',
                                  met=gap <= allowed + 1e-9))
            aqd0 = seed0.get((dataset, det, 'aqd', bits))
            base = seed0.get((dataset, det, 'minmax', bits))
            if aqd0 and base:
                spread = (f'; AQD over {aqd["n"]} seeds {aqd["map"]:.3f} ± '
                          f'{aqd["map_std"]:.3f}' if aqd['n'] > 1 else '')
                found.append(dict(goal=f'{dataset} {det} w{bits}a{bits}: AQD > min-max QAT',
                                  value=f'{aqd0["map"]:.3f} vs {base["map"]:.3f} (seed 0)'
                                        + spread,
                                  met=aqd0['map'] > base['map']))
    mlbn = seed0.get(('synthetic', 'retinanet', 'aqd', 2))
    for norm in ('SharedLevelBN', 'GN'):
        other = seed0.get(('synthetic', 'retinanet', f'head_{norm}', 2))
        if mlbn and other:
            found.append(dict(goal=f'2-bit RetinaNet: multi-level BN > {norm} head',
                              value=f'{mlbn["map"]:.3f} vs {other["map"]:.3f} (seed 0)',
                              met=mlbn['map'] > other['map']))
    integer = table.get(('synthetic', 'retinanet', 'integer', 2))
    simulation = table.get(('synthetic', 'retinanet', 'simulation', 2))
    if integer and simulation:
        found.append(dict(goal='integer engine mAP == float64 simulation mAP (3 decimals)',
                          value=f'{integer["map"]:.3f} vs {simulation["map"]:.3f}',
                          met=round(integer['map'], 3) == round(simulation['map'], 3)))
    for name, ratio in sorted((costs or {}).get('train_step_vs_fp', {}).items()):
        found.append(dict(goal=f'{name} QAT train step <= {QAT_STEP_GOAL}x FP',
                          value=f'{ratio:.2f}x', met=ratio <= QAT_STEP_GOAL))
    return found


def main_table(table: Dict[Key, Dict[str, float]]) -> str:
    """Markdown: FP, AQD and min-max mAP per setup and bit width.

    Args:
        table (dict): From :func:`aggregate`.

    Returns:
        str: Table rows with ``mean ± std (seeds)`` cells.
    """
    lines = ['| data | detector | method | FP | w4a4 | w3a3 | w2a2 |',
             '|---|---|---|---|---|---|---|']

    def cell(entry: Optional[Dict[str, float]]) -> str:
        if not entry:
            return '–'
        std = f' ± {entry["map_std"]:.3f}' if entry['n'] > 1 else ''
        return f'{entry["map"]:.3f}{std} ({entry["n"]})'

    for dataset, det in sorted({(d, det) for d, det, _, _ in table}):
        fp = cell(table.get((dataset, det, 'fp', 32)))
        for method in ('aqd', 'minmax'):
            if not any((dataset, det, method, b) in table for b in BITS_ORDER):
                continue
            cells = [cell(table.get((dataset, det, method, b))) for b in BITS_ORDER]
            lines.append(f'| {dataset} | {det} | {method} | {fp} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


#: What each 2-bit ablation row changes (the AQD row: multi-level BN heads, LSQ,
#: everything quantized, direct 2 bits, fake-quant evaluation).
ABLATIONS = {
    'aqd': 'AQD (multi-level BN head, LSQ, all layers, direct)',
    'head_SharedLevelBN': 'head norm: one BN shared by the levels',
    'head_GN': 'head norm: GroupNorm (mmdet\'s default)',
    'scope_backbone': 'scope: backbone only',
    'scope_backbone+neck': 'scope: backbone + FPN',
    'quantizer_clip': 'quantizer: clip variant (learned clip, STE)',
    'progressive': 'schedule: progressive 8 -> 4 -> 3 -> 2 bits',
    'integer': 'integer engine (int64) of the AQD seed-0 model',
    'simulation': 'float64 simulation of that integer program',
}


def ablation_table(rows: Sequence[Dict]) -> str:
    """Markdown: every 2-bit variant on RetinaNet / digits except the min-max baseline.

    The variants are single runs from the seed-0 FP model, so the AQD row they are
    compared with is seed 0's (its mean over seeds follows when there are more). A
    head-norm variant starts from its own FP model, whose mAP is in the FP column.

    Args:
        rows (list[dict]): The results' rows.

    Returns:
        str: The table.
    """
    table = aggregate(rows)
    seed0 = seed_zero(rows)
    lines = ['| 2-bit RetinaNet-R18, digits | FP start | bbox mAP | AP50 | seeds |',
             '|---|---|---|---|---|']
    fp = seed0.get(('synthetic', 'retinanet', 'fp', 32))
    for method, label in ABLATIONS.items():
        key = ('synthetic', 'retinanet', method, 2)
        entries = [(label, seed0.get(key))]
        if method == 'aqd' and table.get(key, {}).get('n', 0) > 1:
            entries.append((label + ', mean over seeds', table[key]))
        start = fp
        if method.startswith('head_'):
            start = seed0.get(('synthetic', 'retinanet', 'fp_' + method[5:], 32))
        for text, entry in entries:
            if not entry:
                continue
            start_text = f'{start["map"]:.3f}' if start and entry['n'] == 1 else '–'
            std = f' ± {entry["map_std"]:.3f}' if entry['n'] > 1 else ''
            lines.append(f'| {text} | {start_text} | {entry["map"]:.3f}{std} | '
                         f'{entry["ap50"]:.3f} | {entry["n"]} |')
    return '\n'.join(lines)


def control_table(rows: Sequence[Dict]) -> str:
    """Markdown: the FP model trained on for the fine-tunes' iterations vs AQD (seed 0).

    Args:
        rows (list[dict]): The results' rows.

    Returns:
        str: The table, or '' without the control row.
    """
    seed0 = {(method, bits): entry['map']
             for (dataset, det, method, bits), entry in seed_zero(rows).items()
             if (dataset, det) == ('synthetic', 'retinanet')}
    if ('fp_continued', 32) not in seed0:
        return ''
    lines = ['| RetinaNet-R18, digits, seed 0 | bbox mAP |', '|---|---|']
    labels = ((('fp', 32), 'FP'), (('fp_continued', 32), "FP + the fine-tune's iterations in FP"),
              (('aqd', 4), 'AQD w4a4'), (('aqd', 3), 'AQD w3a3'), (('aqd', 2), 'AQD w2a2'))
    for key, label in labels:
        if key in seed0:
            lines.append(f'| {label} | {seed0[key]:.3f} |')
    return '\n'.join(lines)


def costs_table(costs: Optional[Dict]) -> str:
    """Markdown: train-step and forward times relative to FP, and file sizes.

    Args:
        costs (dict, optional): ``detector_costs.py``'s result.

    Returns:
        str: The tables, or '' without costs.
    """
    if not costs:
        return ''
    batch = 'x'.join(str(n) for n in costs['train_input'])
    image = 'x'.join(str(n) for n in costs['forward_input'])
    command = costs['command'].replace(ROOT + '/', '')
    lines = [f'Measured side by side in one process (`{command}`; '
             f'{costs["threads"]} threads, median of {costs["repeats"]} interleaved rounds '
             'of per-round ratios).', '',
             f'| train step ({batch}) | ms | vs FP |', '|---|---|---|']
    for name, sec in costs['train_step_seconds'].items():
        ratio = costs['train_step_vs_fp'].get(name)
        lines.append(f'| {name} | {sec * 1e3:.0f} | {f"{ratio:.2f}x" if ratio else "1"} |')
    lines += ['', f'| forward ({image}) | ms | vs FP |', '|---|---|---|']
    for name, sec in costs['forward_seconds'].items():
        ratio = costs['forward_vs_fp'].get(name)
        lines.append(f'| {name} | {sec * 1e3:.0f} | {f"{ratio:.2f}x" if ratio else "1"} |')
    lines += ['', '| file | MB | vs FP32 weights |', '|---|---|---|']
    for name, size in costs['file_bytes'].items():
        lines.append(f'| {name} | {size / 1e6:.2f} | {costs["file_vs_fp32"][name]:.3f} |')
    return '\n'.join(lines)


def plot(table: Dict[Key, Dict[str, float]], path: str) -> None:
    """Plot mAP vs bits per setup: FP line, AQD (mean ± std) and the min-max baseline.

    Args:
        table (dict): From :func:`aggregate`.
        path (str): PNG file to write.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    setups = sorted({(d, det) for d, det, _, _ in table})
    fig, axes = plt.subplots(1, len(setups), figsize=(4.2 * len(setups), 3.6), squeeze=False)
    for ax, (dataset, det) in zip(axes[0], setups):
        fp = table.get((dataset, det, 'fp', 32))
        if fp:
            ax.axhline(fp['map'], color='k', linestyle='--', label='FP')
        for method, style in (('aqd', 'o-'), ('minmax', 's:')):
            points = [(b, table[(dataset, det, method, b)]) for b in BITS_ORDER
                      if (dataset, det, method, b) in table]
            if points:
                seeds = sorted({e['n'] for _, e in points})
                label = 'AQD' if method == 'aqd' else 'min-max QAT'
                label += f' ({"/".join(map(str, seeds))} seed{"s" if seeds[-1] > 1 else ""})'
                ax.errorbar([b for b, _ in points], [e['map'] for _, e in points],
                            yerr=[e['map_std'] for _, e in points], fmt=style, capsize=3,
                            label=label)
        ax.set_title(f'{det}, {dataset}', fontsize=10)
        ax.set_xlabel('bits (weights and activations)')
        ax.set_ylabel('bbox mAP')
        ax.set_xticks(list(BITS_ORDER))
        ax.invert_xaxis()
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def replace_block(text: str, block: str) -> str:
    """``text`` with the part between the README markers replaced by ``block``.

    Args:
        text (str): README text.
        block (str): The new content.

    Returns:
        str: The new README text.

    Raises:
        ValueError: If the markers are missing or out of order.
    """
    begin, end = text.find(README_BEGIN), text.find(README_END)
    if begin < 0 or end < begin:
        raise ValueError(f'README has no {README_BEGIN} ... {README_END} block')
    return text[:begin + len(README_BEGIN)] + '\n' + block + '\n' + text[end:]


def render(results: Dict, figure: str, notes: Optional[str] = None) -> str:
    """The markdown report of one results file.

    Args:
        results (dict): The study's results JSON.
        figure (str): Path of the plot (linked by file name).
        notes (str, optional): Hand-written reading of the results, appended.

    Returns:
        str: The report.
    """
    table = aggregate(results['rows'])
    checks = goals(results['rows'], results.get('costs'))
    subsets = ', '.join(f'{d}: {"all" if n is None else f"the first {n}"}'
                        for d, n in results.get('val_images', {}).items())
    lines = [f'# AQD study ({results["mode"]} plan)', '',
             f'Produced by `{results["command"]}` on {results["date"]} '
             f'({results["machine"]["cpus"]} CPUs, {results["machine"]["platform"]}'
             + (f'; the runs took {results["rows_minutes"]} min' if results.get('rows_minutes')
                else '') + '). '
             'Seeds: the number in parentheses; ± is the sample std over them.'
             + (f' Val images evaluated: {subsets}.' if subsets else ''),
             '', '## Accuracy vs bits', '', main_table(table), '',
             f'![mAP vs bits]({osp.basename(figure)})', '']
    control = control_table(results['rows'])
    if control:
        lines += ['## Control: FP trained on', '', control, '']
    lines += ['## Ablations at 2 bits', '', ablation_table(results['rows']), '']
    costs = costs_table(results.get('costs'))
    if costs:
        lines += ['## Costs', '', costs, '']
    lines += ['## Goals', '', '| goal | result | met |', '|---|---|---|']
    lines += [f'| {c["goal"]} | {c["value"]} | {"yes" if c["met"] else "**no**"} |'
              for c in checks]
    if results.get('failed'):
        lines += ['', '## Failed runs', '']
        lines += [f'- {name}: {why}' for name, why in results['failed'].items()]
    if notes:
        lines += ['', notes.strip()]
    lines += ['', '## Runs', '', '| run | command | bbox mAP | seconds |', '|---|---|---|---|']
    lines += [f'| {r["name"]} | `{r["command"]}` | {r["metrics"]["coco/bbox_mAP"]:.3f} | '
              f'{r["seconds"]:.0f} |' for r in results['rows']]
    return '\n'.join(lines) + '\n'


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Report of the AQD study (mmaqd)')
    parser.add_argument('results', help='JSON written by tools/benchmarks/aqd_study.py')
    parser.add_argument('--md', default=osp.join(ROOT, 'docs', 'benchmarks.md'),
                        help='markdown report to write')
    parser.add_argument('--notes', help='markdown file with the reading of the results, '
                        'appended to the report')
    parser.add_argument('--readme', default=osp.join(ROOT, 'README.md'),
                        help='README whose study block to replace ("" to skip)')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> str:
    args = parse_args(argv)
    with open(args.results) as f:
        results = json.load(f)
    figure = osp.splitext(args.md)[0] + '_map_vs_bits.png'
    plot(aggregate(results['rows']), figure)
    notes = None
    if args.notes:
        with open(args.notes) as f:
            notes = f.read()
    report = render(results, figure, notes)
    with open(args.md, 'w') as f:
        f.write(report)
    if args.readme:
        with open(args.readme) as f:
            text = f.read()
        block = (f'Main rows of `{results["command"]}` ({results["date"]}; full report with '
                 'the ablations, costs, goals and their reading: '
                 '[docs/benchmarks.md](docs/benchmarks.md)). Cells: bbox mAP, mean ± std '
                 '(seeds).\n\n' + main_table(aggregate(results['rows'])))
        with open(args.readme, 'w') as f:
            f.write(replace_block(text, block))
    print(report)
    return report


if __name__ == '__main__':
    main()
