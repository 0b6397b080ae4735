"""The converging study's report: cells, gaps and the README block, by hand."""
import json

import pytest

from tests.conftest import load_script

report = load_script('.dev_scripts/study/converge_report.py')


def _row(method, bits, iters, seed, m_ap, fp_map=0.6):
    return dict(data='synthetic', detector='retinanet', method=method, bits=bits, iters=iters,
                seed=seed, mAP=m_ap, fp_mAP=fp_map)


ROWS = [_row('fp', 32, 500, 0, 0.6), _row('aqd', 2, 300, 0, 0.40), _row('aqd', 2, 300, 1, 0.44),
        _row('integer', 2, 300, 0, 0.41), _row('fp_continued', 32, 300, 0, 0.7),
        _row('aqd', 4, 300, 0, 0.65), _row('aqd_kd', 4, 100, 0, 0.5)]


def test_cells_are_means_and_sample_stds_over_seeds():
    table = report.aggregate(ROWS)
    cell = table[('synthetic', 'retinanet', 'aqd', 2, 300)]
    assert cell['n'] == 2 and cell['map'] == pytest.approx(0.42)
    assert cell['std'] == pytest.approx((2 * 0.02**2) ** 0.5)  # sample std, n - 1 = 1
    assert report.format_cell(cell) == '0.420 ± 0.028 (2)'
    assert report.format_cell(table[('synthetic', 'retinanet', 'aqd', 4, 300)]) == '0.650'
    assert report.format_cell(None) == '–'


def test_table_lines_per_iterations_and_bits_with_the_gap_to_the_start_model():
    lines = report.setup_table(report.aggregate(ROWS), 'synthetic', 'retinanet',
                               report.fp_start(ROWS, 'synthetic', 'retinanet'))
    lines = lines.splitlines()
    assert lines[0].startswith('| fine-tune iterations | bits | FP trained on | AQD |')
    assert lines[2:] == [
        '| 100 | 4 | – | – | 0.500 | – | – | – |',
        '| 300 | 4 | 0.700 | 0.650 | – | – | – | +5.0 AP |',
        '| 300 | 2 | 0.700 | 0.420 ± 0.028 (2) | – | – | 0.410 | -18.0 AP |',
    ]
    only_fp = report.aggregate(ROWS[:1])  # a setup whose fine-tunes have not run
    assert report.setup_table(only_fp, 'synthetic', 'retinanet', 0.6) == (
        'No fine-tune with the configs as they are has finished yet.')


def test_recipe_rows_get_their_own_table_beside_aqd():
    rows = ROWS + [_row('recipe-lr1e-4', 2, 300, 0, 0.55), _row('recipe-mse', 2, 300, 0, 0.38),
                   _row('recipe-lr1e-4', 4, 300, 0, 0.62), _row('recipe-lr1e-4', 3, 300, 0, 0.5)]
    table = report.aggregate(rows)
    assert report.recipe_table(table, 'synthetic', 'retinanet', 0.6).splitlines()[2:] == [
        '| AQD (the config) | 300 | 4 | 0.650 | +5.0 AP |  |',
        '| lr1e-4 | 300 | 4 | 0.620 | +2.0 AP | -3.0 AP |',
        '| lr1e-4 | 300 | 3 | 0.500 | -10.0 AP | – |',
        '| AQD (the config) | 300 | 2 | 0.420 ± 0.028 (2) | -18.0 AP |  |',
        '| lr1e-4 | 300 | 2 | 0.550 | -5.0 AP | +13.0 AP |',
        '| mse | 300 | 2 | 0.380 | -22.0 AP | -4.0 AP |',
    ]
    assert report.recipe_table(report.aggregate(ROWS), 'synthetic', 'retinanet', 0.6) is None
    assert '| lr1e-4 | 300 | 2 | 0.550 |' in report.render(rows)
    # recipe rows alone make no line in the main table
    only_recipes = [r for r in rows if r['method'] in ('fp', 'recipe-lr1e-4')]
    assert report.setup_table(report.aggregate(only_recipes), 'synthetic', 'retinanet',
                              0.6).startswith('No fine-tune with the configs as they are')


def test_main_writes_the_report_plot_and_readme_block(tmp_path):
    results = tmp_path / 'accuracy_study.json'
    results.write_text(json.dumps(ROWS))
    readme = tmp_path / 'README.md'
    readme.write_text(f'intro\n{report.BEGIN}\nold\n{report.END}\nrest\n')
    report.main([str(results), '--readme', str(readme)])
    text = readme.read_text()
    assert 'old' not in text and text.startswith('intro\n') and text.endswith('rest\n')
    assert '(FP start model: bbox mAP 0.600)' in text and '![mAP vs fine-tune iterations]' in text
    assert (tmp_path / 'accuracy_study.png').stat().st_size > 0
    assert '0.420 ± 0.028 (2)' in (tmp_path / 'accuracy_study.md').read_text()
    readme.write_text('no markers\n')
    with pytest.raises(ValueError, match='the text has no <!-- accuracy-study:begin -->'):
        report.main([str(results), '--readme', str(readme)])


def test_head_ablation_rows_get_their_own_table_and_leave_the_start_model_alone():
    # written first, as a new call's rows are: the main table must still start at 0.6
    heads = [_row('fp_SharedLevelBN', 32, 500, 0, 0.5, fp_map=0.5),
             _row('head_SharedLevelBN', 2, 300, 0, 0.45, fp_map=0.5),
             _row('head_SharedLevelBN', 2, 300, 1, 0.47, fp_map=0.5),
             _row('head_GN', 2, 900, 0, 0.3, fp_map=0.55)]
    rows = heads + ROWS
    assert report.fp_start(rows, 'synthetic', 'retinanet') == 0.6
    assert report.fp_start(rows, 'synthetic', 'retinanet', 'fp_SharedLevelBN') == 0.5
    # no FP row of its own: the start its fine-tunes recorded
    assert report.fp_start(rows, 'synthetic', 'retinanet', 'fp_GN') == 0.55
    assert report.fp_start(rows[1:], 'synthetic', 'retinanet', 'fp_SharedLevelBN') == 0.5
    assert report.head_table(report.aggregate(rows), rows, 'synthetic',
                             'retinanet').splitlines() == [
        '| head norm | its FP model | 2 bits, 300 it. | 2 bits, 900 it. |',
        '|---|---|---|---|',
        '| multi-level BN (the configs) | 0.600 | 0.420 ± 0.028 (2) (-18.0 AP) | – |',
        '| one BN shared by the levels | 0.500 | 0.460 ± 0.014 (2) (-4.0 AP) | – |',
        '| GroupNorm (plain fake-quant: no integer form) | 0.550 | – | 0.300 (-25.0 AP) |',
    ]
    assert report.head_table(report.aggregate(ROWS), ROWS, 'synthetic', 'retinanet') is None
    # the digits' tables first, whatever the order of the rows
    neon = dict(ROWS[1], data='neon-trees')
    assert report.setups([neon] + rows) == [('synthetic', 'retinanet'),
                                            ('neon-trees', 'retinanet')]
    assert '| one BN shared by the levels | 0.500 |' in report.render(rows)
    # the ablation's rows make no line in the main table
    assert '0.460' not in report.setup_table(report.aggregate(rows), 'synthetic', 'retinanet',
                                             0.6)
