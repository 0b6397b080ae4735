"""The converging study's table, plot and README block, from ``accuracy_study.json``.

Reads the flat rows that ``aqd_study.py --plan converge`` writes (``data``,
``detector``, ``method``, ``bits``, ``iters``, ``seed``, ``mAP``, ``fp_mAP``) and
writes, next to the JSON, ``accuracy_study.md`` (one table per data set and
detector) and ``accuracy_study.png`` (mAP vs fine-tune iterations per bit width);
README's block between ``<!-- accuracy-study:begin -->`` and
``<!-- accuracy-study:end -->`` gets the same tables.

Example::

    python .dev_scripts/study/converge_report.py docs/results/accuracy_study.json
"""
import argparse
import json
import os.path as osp
import statistics
from collections import defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

from mmaqd.utils import replace_marked_block

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
BEGIN, END = '<!-- accuracy-study:begin -->', '<!-- accuracy-study:end -->'
#: Table columns: (method in the rows, heading).
COLUMNS = (('fp_continued', 'FP trained on'), ('aqd', 'AQD'), ('aqd_kd', 'AQD + distillation'),
           ('aqd_float', 'AQD, plain fake-quant'), ('integer', 'integer engine (AQD model)'))
BITS_ORDER = (4, 3, 2)
#: The recipe rows' methods start with this (``aqd_study.RECIPES``).
RECIPE_PREFIX = 'recipe-'
#: The head ablation's rows: ``head_<norm>`` from their own FP model ``fp_<norm>``;
#: the main rows (multi-level BN, the configs' head) are its reference line.
HEAD_PREFIX = 'head_'
#: Its norms, in table order, with their names there.
HEAD_NORMS = (('SharedLevelBN', 'one BN shared by the levels'),
              ('GN', 'GroupNorm (plain fake-quant: no integer form)'))
#: The data set of the study's goals, whose tables come first.
MAIN_DATA = 'synthetic'
#: The plan's fine-tune lengths (the plot's x ticks).
PLAN_ITERS = (100, 300, 900)

Cell = Dict[str, float]
Key = Tuple[str, str, str, int, int]  # data, detector, method, bits, iters


def aggregate(rows: Sequence[Dict]) -> Dict[Key, Cell]:
    """mAP per (data, detector, method, bits, iters): mean, sample std, seed count.

    Args:
        rows (list[dict]): The study's rows.

    Returns:
        dict: ``key -> {'map', 'std', 'n'}`` (``std`` 0 for one seed).
    """
    groups: Dict[Key, List[float]] = defaultdict(list)
    for row in rows:
        key = (row['data'], row['detector'], row['method'], int(row['bits']), int(row['iters']))
        groups[key].append(float(row['mAP']))
    return {key: dict(map=statistics.fmean(maps), n=len(maps),
                      std=statistics.stdev(maps) if len(maps) > 1 else 0.0)
            for key, maps in groups.items()}


def fp_start(rows: Sequence[Dict], data: str, detector: str,
             fp_method: str = 'fp') -> Optional[float]:
    """The mAP of an FP model that fine-tunes start from, or None before any of its rows.

    Args:
        rows (list[dict]): The study's rows.
        data (str): Data set.
        detector (str): Detector.
        fp_method (str): The FP row's method: ``'fp'`` for the model of the main table,
            ``'fp_<norm>'`` for a head ablation's own FP model.

    Returns:
        float, optional: The FP row's mAP, or else the ``fp_mAP`` of a row that starts
        from it (the head ablation's rows start from their own FP models).
    """
    fps = [r['mAP'] for r in rows
           if (r['data'], r['detector'], r['method']) == (data, detector, fp_method)]
    if fp_method == 'fp':
        children = {m for m, _ in COLUMNS}
        starts = [r['fp_mAP'] for r in rows if (r['data'], r['detector']) == (data, detector)
                  and (r['method'] in children or r['method'].startswith(RECIPE_PREFIX))]
    else:
        head = HEAD_PREFIX + fp_method[len('fp_'):]
        starts = [r['fp_mAP'] for r in rows
                  if (r['data'], r['detector'], r['method']) == (data, detector, head)]
    values = fps or starts
    return values[0] if values else None


def format_cell(cell: Optional[Cell]) -> str:
    """``0.424``, or ``0.424 ± 0.012 (3)`` over seeds; ``–`` for no row yet."""
    if cell is None:
        return '–'
    if cell['n'] == 1:
        return f'{cell["map"]:.3f}'
    return f'{cell["map"]:.3f} ± {cell["std"]:.3f} ({cell["n"]})'


def setup_table(table: Dict[Key, Cell], data: str, detector: str,
                start: Optional[float]) -> str:
    """One markdown table: a line per (iterations, bits), a column per method.

    Args:
        table (dict): From :func:`aggregate`.
        data (str): Data set.
        detector (str): Detector.
        start (float, optional): The start model's mAP (:func:`fp_start`).

    Returns:
        str: The table, with AQD's distance from the start model in the last column,
        or a line saying that no fine-tune of the setup has finished yet.
    """
    methods = {m for m, _ in COLUMNS}
    iters = sorted({k[4] for k in table if k[:2] == (data, detector) and k[2] in methods})
    if not iters:
        return 'No fine-tune with the configs as they are has finished yet.'
    head = ['fine-tune iterations', 'bits', *(name for _, name in COLUMNS), 'AQD − FP start']
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for it in iters:
        fp = table.get((data, detector, 'fp_continued', 32, it))
        for bits in BITS_ORDER:
            cells = {m: table.get((data, detector, m, bits, it)) for m, _ in COLUMNS}
            if not any(cells.values()):
                continue
            cells['fp_continued'] = fp
            aqd = cells['aqd']
            gap = f'{100 * (aqd["map"] - start):+.1f} AP' if aqd and start is not None else '–'
            lines.append('| ' + ' | '.join([str(it), str(bits), *(format_cell(cells[m])
                                                                  for m, _ in COLUMNS), gap])
                         + ' |')
    return '\n'.join(lines)


def recipe_table(table: Dict[Key, Cell], data: str, detector: str,
                 start: Optional[float]) -> Optional[str]:
    """The recipe rows of a setup beside its AQD rows, or None if it has none.

    Args:
        table (dict): From :func:`aggregate`.
        data (str): Data set.
        detector (str): Detector.
        start (float, optional): The start model's mAP (:func:`fp_start`).

    Returns:
        str, optional: A markdown table: a line per (iterations, bits, recipe), AQD's
        line first, with each line's distance from the start model and from AQD.
    """
    keys = [k for k in table if k[:2] == (data, detector) and k[2].startswith(RECIPE_PREFIX)]
    if not keys:
        return None
    lines = ['| recipe | fine-tune iterations | bits | bbox mAP | − FP start | − AQD |',
             '|---|---|---|---|---|---|']
    for it, bits in sorted({(k[4], k[3]) for k in keys}, key=lambda ib: (ib[0], -ib[1])):
        aqd_key = (data, detector, 'aqd', bits, it)
        aqd = table.get(aqd_key)
        for key in [aqd_key] + sorted(k for k in keys if (k[4], k[3]) == (it, bits)):
            cell = table.get(key)
            if cell is None:
                continue
            gap = f'{100 * (cell["map"] - start):+.1f} AP' if start is not None else '–'
            if key[2] == 'aqd':
                name, gain = 'AQD (the config)', ''
            else:
                name = key[2][len(RECIPE_PREFIX):]
                gain = f'{100 * (cell["map"] - aqd["map"]):+.1f} AP' if aqd else '–'
            lines.append(f'| {name} | {it} | {bits} | {format_cell(cell)} | {gap} | {gain} |')
    return '\n'.join(lines)


def head_table(table: Dict[Key, Cell], rows: Sequence[Dict], data: str, detector: str,
               bits: int = 2) -> Optional[str]:
    """The head ablation: each head norm's FP model and its fine-tunes, or None without rows.

    Args:
        table (dict): From :func:`aggregate`.
        rows (list[dict]): The study's rows (for the FP models, :func:`fp_start`).
        data (str): Data set.
        detector (str): Detector.
        bits (int): The ablation's bit width.

    Returns:
        str, optional: A markdown table: a line per head norm (the configs' multi-level
        BN first, from the main FP model), a column per fine-tune length with the
        distance from that norm's own FP model.
    """
    keys = [k for k in table if k[:2] == (data, detector) and k[2].startswith(HEAD_PREFIX)]
    if not keys:
        return None
    iters = sorted({k[4] for k in keys})
    head = ['head norm', 'its FP model', *(f'{bits} bits, {it} it.' for it in iters)]
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for method, fp_method, name in [('aqd', 'fp', 'multi-level BN (the configs)')] + [
            (HEAD_PREFIX + norm, 'fp_' + norm, text) for norm, text in HEAD_NORMS]:
        start = fp_start(rows, data, detector, fp_method)
        cells = []
        for it in iters:
            cell = table.get((data, detector, method, bits, it))
            gap = '' if cell is None or start is None else \
                f' ({100 * (cell["map"] - start):+.1f} AP)'
            cells.append(format_cell(cell) + gap)
        lines.append('| ' + ' | '.join([name, '–' if start is None else f'{start:.3f}', *cells])
                     + ' |')
    return '\n'.join(lines)


def setups(rows: Sequence[Dict]) -> List[Tuple[str, str]]:
    """The (data, detector) pairs of the rows: the digits (the goals' data) first."""
    return sorted({(r['data'], r['detector']) for r in rows},
                  key=lambda pair: (pair[0] != MAIN_DATA, pair))


def render(rows: Sequence[Dict], figure: Optional[str] = None) -> str:
    """The tables of every data set and detector in the rows, with their start models."""
    table = aggregate(rows)
    parts = []
    for data, detector in setups(rows):
        start = fp_start(rows, data, detector)
        start_text = f'{start:.3f}' if start is not None else 'not trained yet'
        parts += [f'**{detector}, {data}** (FP start model: bbox mAP {start_text})', '',
                  setup_table(table, data, detector, start), '']
        recipes = recipe_table(table, data, detector, start)
        if recipes:
            parts += [recipes, '']
        heads = head_table(table, rows, data, detector)
        if heads:
            parts += [f'Head ablation ({detector}, {data}): each norm fine-tuned from its own '
                      'FP model; in brackets the distance from that model.', '', heads, '']
    if figure:
        parts += [f'![mAP vs fine-tune iterations]({figure})', '']
    return '\n'.join(parts).rstrip() + '\n'


def plot(rows: Sequence[Dict], path: str) -> None:
    """mAP vs fine-tune iterations: a line per bit width (AQD solid, distilled dashed).

    Args:
        rows (list[dict]): The study's rows.
        path (str): PNG file to write.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    table = aggregate(rows)
    pairs = setups(rows)
    fig, axes = plt.subplots(1, len(pairs), figsize=(4.4 * len(pairs), 3.6), squeeze=False)
    for ax, (data, detector) in zip(axes[0], pairs):
        start = fp_start(rows, data, detector)
        if start is not None:
            ax.axhline(start, color='k', linestyle='--', label='FP start')
        for method, style, bits_set in (('fp_continued', 'k^-', (32, )), ('aqd', 'o-', BITS_ORDER),
                                        ('aqd_kd', 's--', BITS_ORDER)):
            for bits in bits_set:
                points = sorted((k[4], c) for k, c in table.items()
                                if k[:4] == (data, detector, method, bits))
                if not points:
                    continue
                label = 'FP trained on' if bits == 32 else \
                    f'w{bits}a{bits} {"AQD" if method == "aqd" else "AQD + KD"}'
                ax.errorbar([p for p, _ in points], [c['map'] for _, c in points],
                            yerr=[c['std'] for _, c in points], fmt=style, capsize=3,
                            label=label, color=None if bits == 32 else f'C{BITS_ORDER.index(bits)}')
        ax.set_title(f'{detector}, {data}', fontsize=10)
        ax.set_xscale('log')
        ax.set_xticks(list(PLAN_ITERS), [str(i) for i in PLAN_ITERS])
        ax.set_xlim(PLAN_ITERS[0] * 0.7, PLAN_ITERS[-1] * 1.4)
        ax.set_xlabel('fine-tune iterations from FP')
        ax.set_ylabel('bbox mAP')
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> str:
    parser = argparse.ArgumentParser(description='Tables and plot of the converging AQD study')
    parser.add_argument('results', help='accuracy_study.json written by aqd_study.py')
    parser.add_argument('--readme', default=osp.join(ROOT, 'README.md'),
                        help='README whose accuracy-study block to replace ("" to skip)')
    args = parser.parse_args(argv)
    with open(args.results) as f:
        rows = json.load(f)
    if not isinstance(rows, list) or not rows:
        raise ValueError(f'{args.results}: expected a non-empty list of rows')
    stem = osp.splitext(args.results)[0]
    plot(rows, stem + '.png')
    md = (f'# Converging AQD study\n\nMade by `python .dev_scripts/study/converge_report.py '
          f'{osp.relpath(args.results, ROOT)}` from the rows of `aqd_study.py --plan converge`. '
          'Cells: bbox mAP on the full val split; mean ± sample std (seeds) where a row has '
          'several seeds.\n\n' + render(rows, osp.basename(stem) + '.png'))
    with open(stem + '.md', 'w') as f:
        f.write(md)
    if args.readme:
        with open(args.readme) as f:
            text = f.read()
        figure = osp.relpath(stem + '.png', osp.dirname(osp.abspath(args.readme)))
        with open(args.readme, 'w') as f:
            f.write(replace_marked_block(text, render(rows, figure), BEGIN, END))
    print(md)
    return md


if __name__ == '__main__':
    main()
