"""The study's plan, generated configs and result parsing; the report's goals by hand."""
import json
import math
import os.path as osp

import pytest
from mmengine.config import Config

from tests.conftest import load_tool

study = load_tool('benchmarks/aqd_study.py')
report = load_tool('benchmarks/study_report.py')


@pytest.mark.parametrize('mode', ['quick', 'full'])
def test_plan_is_ordered_and_unique(mode):
    plan = study.build_plan(mode)
    names = [run.name for run in plan]
    assert len(names) == len(set(names))
    for index, run in enumerate(plan):
        assert run.parent is None or run.parent in names[:index], run.name
        assert osp.isfile(osp.join(study.CONFIGS, run.config)), run.config


def test_quick_plan_fits_ten_minutes_and_full_plan_has_the_rows():
    quick = study.build_plan('quick')
    assert sum(study.estimate_seconds(r, study.QUICK_VAL_FRACTION) for r in quick) <= 600
    full = study.build_plan('full')
    rows = {(r.dataset, r.detector, r.method, r.bits, r.seed) for r in full}
    for dataset in ('synthetic', 'neon-trees'):
        for det in ('retinanet', 'fcos'):
            for seed in (0, 1, 2):
                assert (dataset, det, 'fp', 32, seed) in rows
                assert all((dataset, det, 'aqd', b, seed) in rows for b in (4, 3, 2))
            assert all((dataset, det, 'minmax', b, 0) in rows for b in (4, 3, 2))
    methods = {r.method for r in full}
    assert {'head_SharedLevelBN', 'head_GN', 'scope_backbone', 'scope_backbone+neck',
            'quantizer_clip', 'progressive', 'integer', 'simulation'} <= methods


def test_generated_config_inherits_and_changes_only_its_keys(tmp_path):
    run = next(r for r in study.build_plan('full') if r.name.endswith('minmax_w2_s0'))
    path = tmp_path / 'config.py'
    path.write_text(study.render_config(run, '/ckpt/fp.pth', '/data/val50.json'))
    cfg = Config.fromfile(str(path))
    assert cfg.model.quant_cfg.quantizer == 'MinMax'
    assert cfg.model.quant_cfg.w_bits == 2 and cfg.model.quant_cfg.overrides  # inherited
    assert cfg.train_cfg.max_iters == 300 and cfg.param_scheduler[1].end == 300
    assert cfg.randomness.seed == 0 and cfg.load_from == '/ckpt/fp.pth'
    assert cfg.val_evaluator.ann_file == cfg.test_dataloader.dataset.ann_file == \
        '/data/val50.json'
    gn = next(r for r in study.build_plan('full') if r.method == 'head_GN')
    path.write_text(study.render_config(gn, None, None))
    norm_cfg = Config.fromfile(str(path)).model.bbox_head.norm_cfg
    assert norm_cfg == dict(type='GN', num_groups=32)


def test_final_metrics_reads_the_last_val_entry(tmp_path):
    runs = {'20260101_000000': [{'coco/bbox_mAP': 0.1, 'step': 0}],  # an earlier run
            '20260102_000000': [dict(loss=1.0, step=1), {'coco/bbox_mAP': 0.2, 'step': 0},
                                {'coco/bbox_mAP': 0.25, 'coco/bbox_mAP_50': 0.5, 'step': 0},
                                dict(loss=0.5, step=2)]}
    for stamp, lines in runs.items():
        vis = tmp_path / stamp / 'vis_data'
        vis.mkdir(parents=True)
        (vis / 'scalars.json').write_text('\n'.join(json.dumps(x) for x in lines))
    assert study.final_metrics(str(tmp_path)) == {'coco/bbox_mAP': 0.25,
                                                  'coco/bbox_mAP_50': 0.5}
    assert study.final_metrics(str(tmp_path / 'missing')) is None


def _row(method, bits, seed, value, dataset='synthetic', det='retinanet'):
    return dict(name=f'{method}{bits}_{seed}', dataset=dataset, detector=det, method=method,
                bits=bits, seed=seed, command='train.py x', seconds=1.0,
                metrics={'coco/bbox_mAP': value, 'coco/bbox_mAP_50': value + 0.2})


ROWS = [_row('fp', 32, 0, 0.60), _row('fp', 32, 1, 0.62), _row('aqd', 4, 0, 0.615),
        _row('aqd', 3, 0, 0.595), _row('aqd', 2, 0, 0.60), _row('minmax', 2, 0, 0.55),
        _row('head_GN', 2, 0, 0.61), _row('integer', 2, 0, 0.6), _row('simulation', 2, 0, 0.6)]


def test_aggregate_and_goals_by_hand():
    table = report.aggregate(ROWS)
    fp = table[('synthetic', 'retinanet', 'fp', 32)]
    assert math.isclose(fp['map'], 0.61) and fp['n'] == 2
    assert math.isclose(fp['map_std'], math.sqrt(2) * 0.01)  # sample std of 0.60, 0.62
    met = {g['goal']: g['met'] for g in report.goals(table)}
    assert met == {
        'synthetic retinanet w4a4 >= FP - 0 AP': True,  # +0.5 AP
        'synthetic retinanet w3a3 >= FP - 1 AP': False,  # -1.5 AP
        'synthetic retinanet w2a2 >= FP - 2 AP': True,  # -1.0 AP
        'synthetic retinanet w2a2: AQD > min-max QAT': True,
        '2-bit RetinaNet: multi-level BN > GN head': False,
        'integer engine mAP == float64 simulation mAP': True}


def test_report_plot_and_readme_block(tmp_path):
    results = dict(mode='quick', date='2026-11-27', command='python tools/x.py --quick',
                   machine=dict(cpus=2, platform='linux'), val_subset=True, rows=ROWS)
    src = tmp_path / 'results.json'
    src.write_text(json.dumps(results))
    readme = tmp_path / 'README.md'
    readme.write_text(f'intro\n{report.README_BEGIN}\nold\n{report.README_END}\nend\n')
    md = tmp_path / 'benchmarks.md'
    text = report.main([str(src), '--md', str(md), '--readme', str(readme)])
    assert '| synthetic | retinanet | aqd | 0.610 ± 0.014 (2) | 0.615 (1) | 0.595 (1) |' in text
    assert '| synthetic retinanet w3a3 >= FP - 1 AP | 0.595 vs FP 0.610 (-1.5 AP) | **no** |' \
        in text
    new = readme.read_text()
    assert 'old' not in new and new.startswith('intro\n') and new.endswith('end\n')
    assert '0.615 (1)' in new
    with open(tmp_path / 'benchmarks_map_vs_bits.png', 'rb') as f:
        assert f.read(4) == b'\x89PNG'
    with pytest.raises(ValueError, match='study:begin'):
        report.replace_block('no markers', 'x')
