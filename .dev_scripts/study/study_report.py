"""Turn the study's results JSON into tables, the AQD goals, a plot and README's table.

Reads what ``.dev_scripts/study/aqd_study.py`` wrote; writes ``docs/benchmarks.md``
(or ``--md``), the mAP-vs-bits PNG next to it, replaces README's block between
``<!-- study:begin -->`` and ``<!-- study:end -->`` with the main table, and writes
the model-zoo page ``configs/aqd/README.md`` with its ``metafile.yml``.

Example::

    python .dev_scripts/study/study_report.py docs/results/benchmarks.json
"""
import argparse
import json
import os.path as osp
import statistics
from collections import defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

import yaml

from mmaqd.utils import replace_marked_block

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


DATA_NAMES = {'synthetic': 'generated digits', 'neon-trees': 'NEON tree crowns'}


def _fine_tune_seconds(rows: Sequence[Dict], config: str) -> float:
    """Mean seconds of the study's AQD fine-tunes of one config (on the 2 cores)."""
    seconds = [r['seconds'] for r in rows if r['method'] == 'aqd' and r['config'] == config]
    return statistics.fmean(seconds)


def zoo_rows(results: Dict) -> List[Dict]:
    """One model-zoo row per measured AQD config: mAP over seeds, its FP start, costs.

    Args:
        results (dict): The study's results JSON.

    Returns:
        list[dict]: ``config``, ``dataset``, ``detector``, ``bits``, ``map``,
        ``map_std``, ``seeds``, ``fp_map``, ``iters``, ``seconds`` and, where the
        costs step measured it, ``packed_vs_fp32``.
    """
    table = aggregate(results['rows'])
    sizes = (results.get('costs') or {}).get('file_vs_fp32', {})
    rows = []
    for (dataset, detector, method, bits), cell in sorted(table.items()):
        if method != 'aqd':
            continue
        members = [r for r in results['rows'] if (r['dataset'], r['detector'], r['method'],
                                                   int(r['bits'])) == (dataset, detector, method,
                                                                       bits)]
        fp = table.get((dataset, detector, 'fp', 32))
        size = sizes.get(f'w{bits}a{bits} integer export') if (
            dataset, detector) == ('synthetic', 'retinanet') else None
        rows.append(dict(config=members[0]['config'], dataset=dataset, detector=detector,
                         bits=bits, map=cell['map'], map_std=cell['map_std'], seeds=cell['n'],
                         fp_map=None if fp is None else fp['map'], iters=members[0]['iters'],
                         seconds=_fine_tune_seconds(results['rows'], members[0]['config']),
                         packed_vs_fp32=size))
    return sorted(rows, key=lambda r: (r['dataset'] != 'synthetic', r['detector'], -r['bits']))


def zoo_page(results: Dict, results_path: str) -> str:
    """``configs/aqd/README.md``: the model-zoo table from the committed results.

    Args:
        results (dict): The study's results JSON.
        results_path (str): Where the JSON is, relative to the repository.

    Returns:
        str: The markdown page.
    """
    lines = ['# AQD configs (model zoo)', '',
             '<!-- Generated by .dev_scripts/study/study_report.py from '
             f'{results_path}; edit that script, not this file. -->', '',
             f'Measured rows come from the AQD study (`{results["command"]}`, '
             f'{results["date"]}, 2 CPU cores; report: '
             '[docs/benchmarks.md](../../docs/benchmarks.md)). They use the configs as '
             'they were on that date (the README says what changed since) and the study\'s '
             'budget, not the configs\' own schedules: FP models of 200 iterations '
             '(digits) or 800 (NEON), AQD fine-tunes of the listed iterations from them. '
             'bbox mAP is mean ± std over the seeds; digits: the first 200 val images, NEON: '
             'all. No weights or logs are committed: each row\'s command is in the '
             'report\'s "Runs" table, and rerunning it writes the checkpoint and the log.',
             '',
             '| config | data | bits (w/a) | bbox mAP | FP mAP | fine-tune | train time | '
             'packed model vs FP32 |', '|---|---|---|---|---|---|---|---|']
    for r in zoo_rows(results):
        size = '—' if r['packed_vs_fp32'] is None else f'{r["packed_vs_fp32"]:.3f}'
        fp = '—' if r['fp_map'] is None else f'{r["fp_map"]:.3f}'
        lines.append(f'| [{r["config"]}]({r["config"]}) | {DATA_NAMES[r["dataset"]]} | '
                     f'{r["bits"]}/{r["bits"]} (8-bit stem and predictors) | '
                     f'{r["map"]:.3f} ± {r["map_std"]:.3f} ({r["seeds"]}) | {fp} | '
                     f'{r["iters"]} it | {r["seconds"] / 60:.1f} min | {size} |')
    lines += ['', 'Packed model size: the integer export (`tools/export_integer.py`), '
              'measured for RetinaNet on the digits only.', '',
              '## Not measured', '',
              '- The 8-bit configs (`*-w8a8_*`): not part of the study.',
              '- Every COCO config (`*_1x_coco.py`, R18/R34/R50): **untested**. They follow '
              'the AQD recipe (stage 1: FP 1x; stage 2: fine-tune at lr 0.001 with '
              '`load_from` the stage-1 `epoch_12.pth`), but no COCO run has been made here '
              '(no COCO, no GPU); their `load_from` names a checkpoint you train first.',
              '- The progressive, freeze-BN and sync-BN configs: see the ablations and '
              'the DDP section of the README.', '',
              'Machine-readable: [metafile.yml](metafile.yml) (mmdet\'s format; the measured '
              'rows only).', '']
    return '\n'.join(lines)


def zoo_metafile(results: Dict) -> str:
    """``configs/aqd/metafile.yml`` in mmdet's format, for the measured rows.

    Args:
        results (dict): The study's results JSON.

    Returns:
        str: YAML text.
    """
    models = []
    for r in zoo_rows(results):
        models.append({
            'Name': osp.splitext(r['config'])[0],
            'In Collection': 'AQD',
            'Config': f'configs/aqd/{r["config"]}',
            'Metadata': {'Training Data': DATA_NAMES[r['dataset']],
                         'Training Resources': '2 CPU cores',
                         'Quantization': f'w{r["bits"]}a{r["bits"]}, LSQ, 8-bit stem and '
                                         'predictors',
                         'Fine-tune iterations': r['iters']},
            'Results': [{'Task': 'Object Detection', 'Dataset': DATA_NAMES[r['dataset']],
                         'Metrics': {'box AP': round(100 * r['map'], 1)}}],
        })
    meta = {'Collections': [{
        'Name': 'AQD',
        'Metadata': {'Training Techniques': ['Quantization-aware training', 'LSQ',
                                             'Multi-level BN'],
                     'Architecture': ['RetinaNet', 'FCOS', 'ResNet', 'FPN']},
        'Paper': {'URL': 'https://arxiv.org/abs/2007.06919',
                  'Title': 'AQD: Towards Accurate Fully-Quantized Object Detection'},
        'README': 'configs/aqd/README.md'}], 'Models': models}
    header = ('# Generated by .dev_scripts/study/study_report.py from the committed study '
              'results; the measured rows only (see README.md).\n')
    return header + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Report of the AQD study (mmaqd)')
    parser.add_argument('results', help='JSON written by .dev_scripts/study/aqd_study.py')
    parser.add_argument('--md', default=osp.join(ROOT, 'docs', 'benchmarks.md'),
                        help='markdown report to write')
    parser.add_argument('--notes', help='markdown file with the reading of the results, '
                        'appended to the report')
    parser.add_argument('--readme', default=osp.join(ROOT, 'README.md'),
                        help='README whose study block to replace ("" to skip)')
    parser.add_argument('--zoo', default=osp.join(ROOT, 'configs', 'aqd'),
                        help='folder for the model-zoo README.md and metafile.yml ("" to skip)')
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
            f.write(replace_marked_block(text, block, README_BEGIN, README_END))
    if args.zoo:
        relative = osp.relpath(osp.abspath(args.results), ROOT)
        pages = {'README.md': zoo_page(results, relative), 'metafile.yml': zoo_metafile(results)}
        for name, page in pages.items():
            with open(osp.join(args.zoo, name), 'w') as f:
                f.write(page)
    print(report)
    return report


if __name__ == '__main__':
    main()
