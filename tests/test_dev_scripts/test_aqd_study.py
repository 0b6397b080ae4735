"""The study's plan, generated configs and result parsing; the report's goals by hand."""
import dataclasses
import hashlib
import json
import math
import os
import os.path as osp

import pytest
from mmengine.config import Config

from tests.conftest import load_script

study = load_script('.dev_scripts/study/aqd_study.py')
report = load_script('.dev_scripts/study/study_report.py')


@pytest.mark.parametrize('mode', sorted(study.PLANS))
def test_plan_is_ordered_and_unique(mode):
    plan = study.build_plan(mode)
    names = [run.name for run in plan]
    assert len(names) == len(set(names))
    for index, run in enumerate(plan):
        assert run.parent is None or run.parent in names[:index], run.name
        assert osp.isfile(osp.join(study.CONFIGS, run.config)), run.config


def _rows(mode):
    return {(r.dataset, r.detector, r.method, r.bits, r.seed) for r in study.build_plan(mode)}


def test_plans_fit_their_budgets_and_have_their_rows():
    assert study.plan_seconds('quick', study.build_plan('quick')) <= 600
    # about 2 hours once the NEON FP models (800 iterations) were trained and reused
    # (2 h 04 min with NEON's integer-aware step times of 2026-12-07)
    reused = [r for r in study.build_plan('full')
              if not (r.dataset == 'neon-trees' and r.method == 'fp')]
    assert study.plan_seconds('full', reused) <= 7500
    full, large = _rows('full'), _rows('large')
    parents = {r.name: r.parent for r in study.build_plan('full')}
    for dataset in ('synthetic', 'neon-trees'):
        for det in ('retinanet', 'fcos'):
            fp_seeds = (0, 1, 2) if (dataset, det) == ('synthetic', 'retinanet') else (0, )
            for rows, seeds in ((full, fp_seeds), (large, (0, 1, 2))):
                for seed in seeds:
                    assert (dataset, det, 'fp', 32, seed) in rows
            for rows in (full, large):  # 3 AQD seeds everywhere
                for seed in (0, 1, 2):
                    assert all((dataset, det, 'aqd', b, seed) in rows for b in (4, 3, 2))
            for seed in (0, 1, 2):  # from their own FP seed, else from the seed-0 FP
                parent = f'{dataset}/{det}/fp_s{seed if seed in fp_seeds else 0}'
                assert parents[f'{dataset}/{det}/aqd_w3_s{seed}'] == parent
            assert (dataset, det, 'minmax', 2, 0) in full
            assert all((dataset, det, 'minmax', b, 0) in large for b in (4, 3, 2))
    assert all(('synthetic', 'retinanet', 'minmax', b, 0) in full for b in (4, 3, 2))
    methods = {r[2] for r in full}
    assert {'head_SharedLevelBN', 'head_GN', 'scope_backbone', 'scope_backbone+neck',
            'quantizer_clip', 'progressive', 'integer', 'simulation', 'fp_continued',
            'fp_GN', 'fp_SharedLevelBN'} <= methods
    with pytest.raises(ValueError, match="'huge'"):
        study.build_plan('huge')


def test_estimate_by_hand():
    run = study.Run('x', 'synthetic', 'retinanet', 'aqd', 2, 0, 'c.py', iters=10)
    per_iter = study.SECONDS_PER_ITER[('synthetic', True)]
    expected = study.SECONDS_PER_RUN + 10 * per_iter + study.SECONDS_PER_EVAL['synthetic'] / 5
    assert math.isclose(study.estimate_seconds(run, 100), expected)
    distilled = study.Run('x', 'synthetic', 'retinanet', 'aqd_kd', 2, 0, 'c.py', iters=10,
                          distill=True)
    expected = (study.SECONDS_PER_RUN + 10 * per_iter * study.DISTILL_STEP_FACTOR +
                study.SECONDS_PER_EVAL['synthetic'] / 5)
    assert math.isclose(study.estimate_seconds(distilled, 100), expected)
    integer = study.Run('y', 'neon-trees', 'retinanet', 'integer', 2, 0, 'c.py', integer='int')
    assert math.isclose(study.estimate_seconds(integer, None), study.SECONDS_PER_RUN
                        + study.INTEGER_EVAL_FACTOR * study.SECONDS_PER_EVAL['neon-trees'])


def test_generated_config_inherits_and_changes_only_its_keys(tmp_path):
    run = next(r for r in study.build_plan('full') if r.name.endswith('retinanet/minmax_w2_s0'))
    iters = study.PLANS['full'].q_iters['synthetic']
    path = tmp_path / 'config.py'
    path.write_text(study.render_config(run, '/ckpt/fp.pth', '/data/val50.json'))
    cfg = Config.fromfile(str(path))
    assert cfg.model.quant_cfg.quantizer == 'MinMax'
    assert cfg.model.quant_cfg.w_bits == 2 and cfg.model.quant_cfg.overrides  # inherited
    assert cfg.train_cfg.max_iters == iters and cfg.param_scheduler[1].end == iters
    assert cfg.randomness.seed == 0 and cfg.load_from == '/ckpt/fp.pth'
    assert cfg.val_evaluator.ann_file == cfg.test_dataloader.dataset.ann_file == \
        '/data/val50.json'
    gn = next(r for r in study.build_plan('full') if r.method == 'head_GN')
    path.write_text(study.render_config(gn, None, None))
    norm_cfg = Config.fromfile(str(path)).model.bbox_head.norm_cfg
    assert norm_cfg == dict(type='GN', num_groups=32)
    seed2 = next(r for r in study.build_plan('full') if r.name.endswith('retinanet/aqd_w3_s2'))
    assert seed2.seed == 2 and seed2.parent == 'synthetic/retinanet/fp_s2'


def test_progressive_row_scales_the_schedule_to_its_iterations(tmp_path):
    run = next(r for r in study.build_plan('full') if r.method == 'progressive')
    path = tmp_path / 'config.py'
    path.write_text(study.render_config(run, None, None))
    cfg = Config.fromfile(str(path))
    hook = next(h for h in cfg.custom_hooks if h.type == 'BitWidthScheduleHook')
    assert run.iters == 50 and cfg.train_cfg.max_iters == 50
    assert [(s.begin, s.bits) for s in hook.schedule] == [(0, 8), (8, 4), (16, 3), (25, 2)]
    assert any(h.type == 'QuantNaNGuardHook' for h in cfg.custom_hooks)


def test_a_failed_row_skips_its_children_and_the_rest_runs(tmp_path, monkeypatch):
    ran = []

    def fake_execute(run, root, python, val_ann, committed=None):
        ran.append(run.name)
        if run.name == 'synthetic/retinanet/aqd_w4_s0':
            raise RuntimeError('boom')
        return dict(study.asdict(run), config_sha256=study.config_sha256(run),
                    metrics={'coco/bbox_mAP': 0.5}, seconds=1.0, command='x')

    monkeypatch.setattr(study, 'execute', fake_execute)
    monkeypatch.setattr(study, 'val_subsets', lambda mode, root: {})
    monkeypatch.setattr(study, 'missing_data', lambda plan: [])
    monkeypatch.setattr(study, 'measure_costs', lambda root, python, repeats: {'ok': 1})
    out = tmp_path / 'r.json'
    result = study.main(['--quick', '--work-dir', str(tmp_path), '--out', str(out)])
    assert result['failed'] == {'synthetic/retinanet/aqd_w4_s0': 'boom'}
    assert ran == [r.name for r in study.build_plan('quick')]  # nothing depends on w4
    assert json.loads(out.read_text())['costs'] == {'ok': 1}

    def fail_fp(run, root, python, val_ann, committed=None):
        if run.name.endswith('fp_s0'):
            raise RuntimeError('no fp')
        return fake_execute(run, root, python, val_ann)

    def no_checkpoints(root, python, repeats):
        raise RuntimeError('costs: no checkpoint')

    monkeypatch.setattr(study, 'execute', fail_fp)
    monkeypatch.setattr(study, 'measure_costs', no_checkpoints)
    result = study.main(['--quick', '--work-dir', str(tmp_path), '--out', str(out)])
    assert set(result['failed']) == {r.name for r in study.build_plan('quick')} | {'costs'}
    assert 'integer' in ' '.join(result['failed']) and result['rows'] == []


def test_missing_data_stops_the_study_before_its_first_row(tmp_path, monkeypatch):
    plan = study.build_plan('full')  # digits and NEON trees
    digits = tmp_path / 'data' / 'synthetic' / 'annotations'
    digits.mkdir(parents=True)
    (digits / 'train.json').write_text('{}')
    assert study.missing_data(plan, str(tmp_path)) == [
        ('neon-trees', osp.join('data', 'neon_trees', 'annotations', 'train.json')),
        ('neon-trees', osp.join('data', 'neon_trees', 'annotations', 'val.json')),
        ('synthetic', osp.join('data', 'synthetic', 'annotations', 'val.json'))]
    (digits / 'val.json').write_text('{}')
    assert study.missing_data(study.build_plan('quick'), str(tmp_path)) == []  # digits only

    ran = []
    monkeypatch.setattr(study, 'execute', lambda *args, **kwargs: ran.append(args))
    monkeypatch.setattr(study, 'missing_data', lambda plan: [
        ('neon-trees', 'data/neon_trees/annotations/val.json')])
    with pytest.raises(SystemExit, match=r'data/neon_trees/annotations/val.json is missing '
                       r'\(make data DATA=neon-trees\)'):
        study.main(['--work-dir', str(tmp_path / 'runs'), '--out', str(tmp_path / 'r.json')])
    assert ran == [] and not (tmp_path / 'runs').exists() and not (tmp_path / 'r.json').exists()


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
    # a newer attempt that logged no metrics does not report an older attempt's
    vis = tmp_path / '20260103_000000' / 'vis_data'
    vis.mkdir(parents=True)
    (vis / 'scalars.json').write_text(json.dumps(dict(loss=1.0, step=1)))
    assert study.final_metrics(str(tmp_path)) is None


def test_cached_rows_are_reused_only_while_their_definition_and_parent_hold(tmp_path):
    plan = {r.name: r for r in study.build_plan('quick')}
    fp, child = plan['synthetic/retinanet/fp_s0'], plan['synthetic/retinanet/aqd_w4_s0']
    for run in (fp, child):
        (tmp_path / run.name).mkdir(parents=True)
        (tmp_path / run.name / 'study_result.json').write_text(json.dumps(
            dict(study.asdict(run), config_sha256=study.config_sha256(run),
                 metrics={'coco/bbox_mAP': 0.1}, seconds=1.0)))
    os.utime(tmp_path / fp.name / 'study_result.json', (1000, 1000))
    assert study.cache_is_valid(fp, str(tmp_path)) and study.cache_is_valid(child, str(tmp_path))
    changed = dataclasses.replace(child, iters=child.iters + 1)
    assert not study.cache_is_valid(changed, str(tmp_path))
    changed = dataclasses.replace(child, changes=study._merge(child.changes, dict(x=1)))
    assert not study.cache_is_valid(changed, str(tmp_path))
    # the parent was rerun after the child had finished
    os.utime(tmp_path / fp.name / 'study_result.json', None)
    os.utime(tmp_path / child.name / 'study_result.json', (2000, 2000))
    assert not study.cache_is_valid(child, str(tmp_path))
    assert not study.cache_is_valid(plan['synthetic/retinanet/aqd_w2_s0'], str(tmp_path))


def test_config_digest_follows_the_config_files_not_the_paths(tmp_path, monkeypatch):
    configs = tmp_path / 'configs'
    configs.mkdir()
    (configs / 'base.py').write_text('optim_wrapper = dict(optimizer=dict(lr=0.001))\n')
    (configs / 'child.py').write_text("_base_ = './base.py'\nmodel = dict(depth=18)\n")
    monkeypatch.setattr(study, 'CONFIGS', str(configs))
    run = study.Run('d/r/aqd_w2', 'synthetic', 'retinanet', 'aqd', 2, 0, 'child.py',
                    parent='d/r/fp_s0', iters=3)
    first = study.config_sha256(run)
    assert len(first) == 16 and study.config_sha256(run) == first
    # a change to an inherited file (a new default lr) is a new digest, and back again
    (configs / 'base.py').write_text('optim_wrapper = dict(optimizer=dict(lr=0.0001))\n')
    assert study.config_sha256(run) != first
    (configs / 'base.py').write_text('optim_wrapper = dict(optimizer=dict(lr=0.001))\n')
    assert study.config_sha256(run) == first
    # the run's changes count; a change that restates the file's value does not
    assert study.config_sha256(dataclasses.replace(run, changes=dict(
        optim_wrapper=dict(optimizer=dict(lr=0.0001))))) != first
    assert study.config_sha256(dataclasses.replace(run, changes=dict(
        optim_wrapper=dict(optimizer=dict(lr=0.001))))) == first
    # the cache of a row made before the file changed is not its result
    (tmp_path / run.name).mkdir(parents=True)
    (tmp_path / run.name / 'study_result.json').write_text(json.dumps(
        dict(study.asdict(run), config_sha256=first, metrics={}, seconds=1.0)))
    (tmp_path / 'd/r/fp_s0').mkdir(parents=True)
    (tmp_path / 'd/r/fp_s0/study_result.json').write_text('{}')
    os.utime(tmp_path / 'd/r/fp_s0/study_result.json', (1000, 1000))
    assert study.cache_is_valid(run, str(tmp_path))
    (configs / 'child.py').write_text("_base_ = './base.py'\nmodel = dict(depth=34)\n")
    assert not study.cache_is_valid(run, str(tmp_path))


def test_committed_rows_stay_only_while_the_plan_makes_them_as_they_were_made():
    plan = study.build_plan('converge')
    runs = {r.name: r for r in plan}
    names = ['synthetic/fcos/fp_s0', 'synthetic/fcos/aqd_w2_i300_s0',
             'synthetic/fcos/recipe-lr1e-4_w4_i300_s0']
    committed = {n: dict(study.asdict(runs[n]), config_sha256=study.config_sha256(runs[n]),
                         metrics={'coco/bbox_mAP': 0.5}) for n in names}
    assert study.current_rows(committed, plan) == committed
    stale = dict(committed)
    stale[names[1]] = dict(committed[names[1]], config_sha256='0' * 16)  # an older config
    stale[names[2]] = {k: v for k, v in committed[names[2]].items() if k != 'config_sha256'}
    stale['synthetic/fcos/gone_w2'] = dict(committed[names[1]], name='synthetic/fcos/gone_w2')
    assert list(study.current_rows(stale, plan)) == names[:1]
    redefined = {names[0]: dict(committed[names[0]], iters=100)}
    assert study.current_rows(redefined, plan) == {}


def test_fp_control_trains_on_with_the_fine_tunes_optimizer_and_schedule(tmp_path):
    plan = {r.name: r for r in study.build_plan('full')}
    control = plan['synthetic/retinanet/fp_continued_s0']
    aqd = plan['synthetic/retinanet/aqd_w4_s0']
    cfgs = []
    for run in (control, aqd):
        path = tmp_path / f'{run.method}.py'
        path.write_text(study.render_config(run, '/ckpt/fp.pth', None))
        cfgs.append(Config.fromfile(str(path)))
    assert 'quant_cfg' not in cfgs[0].model or cfgs[0].model.quant_cfg.get('w_bits', 32) >= 32
    assert cfgs[0].optim_wrapper.optimizer == cfgs[1].optim_wrapper.optimizer
    assert cfgs[0].optim_wrapper.optimizer.lr == study.FINE_TUNE_LR
    assert cfgs[0].param_scheduler == cfgs[1].param_scheduler
    assert cfgs[0].train_cfg.max_iters == cfgs[1].train_cfg.max_iters


def _row(method, bits, seed, value, dataset='synthetic', det='retinanet'):
    return dict(name=f'{method}{bits}_{seed}', dataset=dataset, detector=det, method=method,
                bits=bits, seed=seed, command='train.py x', seconds=1.0,
                metrics={'coco/bbox_mAP': value, 'coco/bbox_mAP_50': value + 0.2})


ROWS = [_row('fp', 32, 0, 0.60), _row('fp', 32, 1, 0.62), _row('aqd', 4, 0, 0.615),
        _row('aqd', 3, 0, 0.595), _row('aqd', 2, 0, 0.60), _row('aqd', 2, 1, 0.56),
        _row('minmax', 2, 0, 0.59),
        _row('head_GN', 2, 0, 0.61), _row('integer', 2, 0, 0.6), _row('simulation', 2, 0, 0.6),
        _row('fp_continued', 32, 0, 0.63), _row('fp_GN', 32, 0, 0.58)]
COSTS = dict(command='python tools/benchmarks/detector_costs.py a b', threads=2, repeats=3,
             train_input=[8, 3, 256, 256], forward_input=[1, 3, 256, 256],
             train_step_seconds={'FP': 1.0, 'w4a4': 1.25, 'w2a2': 1.4},
             train_step_vs_fp={'w4a4': 1.25, 'w2a2': 1.4},
             forward_seconds={'FP': 0.1, 'w2a2 integer engine': 2.0},
             forward_vs_fp={'w2a2 integer engine': 20.0},
             file_bytes={'FP fp32 weights': 4_000_000, 'w2a2 integer export': 500_000},
             file_vs_fp32={'FP fp32 weights': 1.0, 'w2a2 integer export': 0.125})


def test_aggregate_and_goals_by_hand():
    table = report.aggregate(ROWS)
    fp = table[('synthetic', 'retinanet', 'fp', 32)]
    assert math.isclose(fp['map'], 0.61) and fp['n'] == 2
    assert math.isclose(fp['map_std'], math.sqrt(2) * 0.01)  # sample std of 0.60, 0.62
    met = {g['goal']: g['met'] for g in report.goals(ROWS)}
    assert met == {
        'synthetic retinanet w4a4 >= FP - 0 AP': True,  # +0.5 AP
        'synthetic retinanet w3a3 >= FP - 1 AP': False,  # -1.5 AP
        'synthetic retinanet w2a2 >= FP - 2 AP': False,  # mean 0.58: -3.0 AP
        # seed 0 against seed 0 (0.60 > 0.59), although the 2-seed mean (0.58) is below
        'synthetic retinanet w2a2: AQD > min-max QAT': True,
        '2-bit RetinaNet: multi-level BN > GN head': False,  # 0.60 vs 0.61
        'integer engine mAP == float64 simulation mAP (3 decimals)': True}
    values = {g['goal']: g['value'] for g in report.goals(ROWS)}
    assert values['synthetic retinanet w2a2: AQD > min-max QAT'] == \
        '0.600 vs 0.590 (seed 0); AQD over 2 seeds 0.580 ± 0.028'


def test_qat_step_goal_and_cost_tables_by_hand():
    met = {g['goal']: (g['value'], g['met']) for g in report.goals([], COSTS)}
    assert met == {'w2a2 QAT train step <= 1.3x FP': ('1.40x', False),
                   'w4a4 QAT train step <= 1.3x FP': ('1.25x', True)}
    text = report.costs_table(COSTS)
    assert '| w4a4 | 1250 | 1.25x |' in text and '| FP | 1000 | 1 |' in text
    assert '| w2a2 integer engine | 2000 | 20.00x |' in text
    assert '| w2a2 integer export | 0.50 | 0.125 |' in text
    assert report.costs_table(None) == ''


def test_report_plot_and_readme_block(tmp_path):
    results = dict(mode='quick', date='2026-11-27', command='python tools/x.py --quick',
                   machine=dict(cpus=2, platform='linux'), val_images={'synthetic': 50},
                   rows=ROWS, costs=COSTS, failed={'synthetic/fcos/fp_s0': 'exit 1'})
    notes = tmp_path / 'notes.md'
    notes.write_text('## Reading\n\nhand-written\n')
    src = tmp_path / 'results.json'
    src.write_text(json.dumps(results))
    readme = tmp_path / 'README.md'
    readme.write_text(f'intro\n{report.README_BEGIN}\nold\n{report.README_END}\nend\n')
    md = tmp_path / 'benchmarks.md'
    text = report.main([str(src), '--md', str(md), '--readme', str(readme), '--notes',
                        str(notes), '--zoo', ''])
    assert ('| synthetic | retinanet | aqd | 0.610 ± 0.014 (2) | 0.615 (1) | 0.595 (1) | '
            '0.580 ± 0.028 (2) |') in text
    assert '| AQD (multi-level BN head, LSQ, all layers, direct) | 0.600 | 0.600 | 0.800 | 1 |' \
        in text  # seed 0, from the seed-0 FP model
    assert ('| AQD (multi-level BN head, LSQ, all layers, direct), mean over seeds | – | '
            '0.580 ± 0.028 | 0.780 | 2 |') in text
    assert '| synthetic retinanet w3a3 >= FP - 1 AP | 0.595 vs FP 0.610 (-1.5 AP) | **no** |' \
        in text
    assert "| FP + the fine-tune's iterations in FP | 0.630 |" in text
    assert '| head norm: GroupNorm (mmdet\'s default) | 0.580 | 0.610 | 0.810 | 1 |' in text
    assert '| w2a2 QAT train step <= 1.3x FP | 1.40x | **no** |' in text
    assert '- synthetic/fcos/fp_s0: exit 1' in text and 'hand-written' in text
    assert 'Val images evaluated: synthetic: the first 50.' in text
    new = readme.read_text()
    assert 'old' not in new and new.startswith('intro\n') and new.endswith('end\n')
    assert '0.615 (1)' in new
    with open(tmp_path / 'benchmarks_map_vs_bits.png', 'rb') as f:
        assert f.read(4) == b'\x89PNG'
    readme.write_text('no markers\n')
    with pytest.raises(ValueError, match='study:begin'):
        report.main([str(src), '--md', str(md), '--readme', str(readme), '--zoo', ''])


def test_fp_checkpoint_replaces_training_by_evaluation(tmp_path, monkeypatch):
    ckpt = tmp_path / 'fp.pth'
    ckpt.write_bytes(b'x')
    plan = study.adopt_fp_checkpoints(study.build_plan('full'),
                                      [f'neon-trees/fcos={ckpt}'])
    fp = next(r for r in plan if r.name == 'neon-trees/fcos/fp_s0')
    assert fp.checkpoint == str(ckpt) and fp.iters == 0 and fp.changes == {}
    assert all(r.checkpoint is None for r in plan if r is not fp)
    for item, match in (('neon-trees/fcos', 'DATASET/DETECTOR=CHECKPOINT'),
                        (f'neon-trees/ssd={ckpt}', "no FP row 'neon-trees/ssd/fp_s0'"),
                        ('neon-trees/fcos=/missing.pth', 'does not exist')):
        with pytest.raises(ValueError, match=match):
            study.adopt_fp_checkpoints(study.build_plan('full'), [item])

    calls = []

    def fake_call(cmd, cwd, stdout, stderr):  # tools/test.py writing its metrics
        calls.append(cmd)
        out = cmd[cmd.index('--metrics-out') + 1]
        with open(out, 'w') as f:
            json.dump({'coco/bbox_mAP': 0.125}, f)
        return 0

    monkeypatch.setattr(study.subprocess, 'call', fake_call)
    row = study.execute(fp, str(tmp_path), 'python', None)
    assert calls[0][1].endswith('tools/test.py') and calls[0][3] == str(ckpt)
    assert row['metrics'] == {'coco/bbox_mAP': 0.125} and row['checkpoint'] == str(ckpt)
    # its children start from the given checkpoint
    assert study.last_checkpoint(str(tmp_path / fp.name)) == str(ckpt)
    assert study.cache_is_valid(fp, str(tmp_path))


def test_converge_plan_has_the_rows_of_the_study():
    plan = study.build_plan('converge')
    rows = {(r.dataset, r.detector, r.method, r.bits, r.iters, r.seed) for r in plan}
    for det in ('retinanet', 'fcos'):
        assert ('synthetic', det, 'fp', 32, 500, 0) in rows
        for iters in (100, 300, 900):
            assert ('synthetic', det, 'fp_continued', 32, iters, 0) in rows
            for bits in (4, 3, 2):
                for method in ('aqd', 'aqd_kd'):
                    assert ('synthetic', det, method, bits, iters, 0) in rows
        for seed in (1, 2):
            assert all(('synthetic', det, m, b, 300, seed) in rows
                       for m in ('aqd', 'aqd_kd') for b in (4, 3, 2))
            assert ('synthetic', det, 'aqd', 2, 900, seed) in rows
        for bits in (4, 2):
            assert ('synthetic', det, 'aqd_float', bits, 300, 0) in rows
            assert ('synthetic', det, 'integer', bits, 300, 0) in rows
        assert ('neon-trees', det, 'fp', 32, 800, 0) in rows
        assert all(('neon-trees', det, 'aqd', b, 300, 0) in rows for b in (4, 3, 2))
    for norm in ('SharedLevelBN', 'GN'):
        assert ('synthetic', 'retinanet', f'fp_{norm}', 32, 500, 0) in rows
        assert all(('synthetic', 'retinanet', f'head_{norm}', 2, i, 0) in rows
                   for i in (300, 900))
    by_name = {r.name: r for r in plan}
    assert by_name['synthetic/retinanet/head_GN_w2_i300_s0'].parent == \
        'synthetic/retinanet/fp_GN_s0'
    assert all(r.distill == (r.method == 'aqd_kd') for r in plan)
    # the 300-iteration rows of both detectors come before the longer ones
    order = [r.name for r in plan]
    assert order.index('synthetic/fcos/aqd_w3_i300_s0') < order.index(
        'synthetic/retinanet/aqd_w2_i900_s0')


def test_converge_rows_configs_kd_teacher_and_plain_qat(tmp_path):
    plan = {r.name: r for r in study.build_plan('converge')}
    path = tmp_path / 'config.py'
    kd = plan['synthetic/retinanet/aqd_kd_w2_i300_s0']
    teacher = osp.join(study.CONFIGS, 'retinanet_r18_fpn_aqd-fp32_synthetic.py')
    path.write_text(study.render_config(kd, '/ckpt/fp.pth', None, teacher))
    cfg = Config.fromfile(str(path))
    assert cfg.model.distill == dict(teacher_config=teacher, teacher_ckpt='/ckpt/fp.pth')
    assert cfg.train_cfg.max_iters == 300
    assert [h.type for h in cfg.custom_hooks] == ['QuantNaNGuardHook', 'IntegerAwareQATHook']
    with pytest.raises(ValueError, match="needs its parent's config and checkpoint"):
        study.render_config(kd, None, None)
    plain = plan['synthetic/fcos/aqd_float_w2_i300_s0']
    path.write_text(study.render_config(plain, '/ckpt/fp.pth', None))
    assert [h.type for h in Config.fromfile(str(path)).custom_hooks] == ['QuantNaNGuardHook']
    gn = plan['synthetic/retinanet/head_GN_w2_i900_s0']
    path.write_text(study.render_config(gn, '/ckpt/fp.pth', None))
    assert [h.type for h in Config.fromfile(str(path)).custom_hooks] == ['QuantNaNGuardHook']



def test_recipe_rows_change_only_their_recipe(tmp_path):
    plan = {r.name: r for r in study.build_plan('converge')}
    path = tmp_path / 'config.py'

    def config_of(name):
        path.write_text(study.render_config(plan[name], '/ckpt/fp.pth', None))
        return Config.fromfile(str(path))

    for det in ('retinanet', 'fcos'):
        base = config_of(f'synthetic/{det}/aqd_w2_i300_s0')
        mse = config_of(f'synthetic/{det}/recipe-mse_w2_i300_s0')
        slow = config_of(f'synthetic/{det}/recipe-lr1e-4_w2_i300_s0')
        both = config_of(f'synthetic/{det}/recipe-mse-lr1e-4_w2_i300_s0')
        # the configs fine-tune at the FP configs' lr; the recipe rows at a tenth of it
        fp = Config.fromfile(osp.join(study.CONFIGS, f'{det}_r18_fpn_aqd-fp32_synthetic.py'))
        assert base.optim_wrapper.optimizer.lr == mse.optim_wrapper.optimizer.lr == \
            fp.optim_wrapper.optimizer.lr == study.FINE_TUNE_LR == 1e-3
        assert slow.optim_wrapper.optimizer.lr == both.optim_wrapper.optimizer.lr == 1e-4
        assert slow.custom_hooks == base.custom_hooks
        assert f'synthetic/{det}/recipe-lr1e-4_w4_i300_s0' in plan
        for cfg in (mse, both):
            calibration, *rest = cfg.custom_hooks
            assert calibration == dict(type='QuantCalibrationHook', rule='mse', num_batches=4)
            assert rest == base.custom_hooks
        for cfg in (mse, slow, both):
            assert cfg.model == base.model and cfg.param_scheduler == base.param_scheduler
            assert cfg.load_from == '/ckpt/fp.pth' and cfg.train_cfg.max_iters == 300


def test_neon_recipe_row_fine_tunes_at_the_fp_lr(tmp_path):
    plan = {r.name: r for r in study.build_plan('converge')}
    path = tmp_path / 'config.py'
    for det in ('retinanet', 'fcos'):
        configs = []
        for method in ('aqd', 'recipe-fp-lr'):
            name = f'neon-trees/{det}/{method}_w2_i300_s0'
            path.write_text(study.render_config(plan[name], '/ckpt/fp.pth', None))
            configs.append(Config.fromfile(str(path)))
        base, fast = configs
        fp = Config.fromfile(osp.join(study.CONFIGS, f'{det}_r18_fpn_aqd-fp32_neon-trees.py'))
        # SGD at the FP config's lr (0.01) where the NEON configs fine-tune at 0.001
        assert fast.optim_wrapper.optimizer == dict(fp.optim_wrapper.optimizer, lr=0.01)
        assert base.optim_wrapper.optimizer.lr == 0.001
        assert fast.model == base.model and fast.custom_hooks == base.custom_hooks
        assert fast.train_cfg == base.train_cfg and fast.param_scheduler == base.param_scheduler


def _fake_fp_checkpoint(root, name, content):
    """A run dir whose last checkpoint is a file with ``content``; its identity."""
    work_dir = root / name
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / 'iter_1.pth').write_bytes(content)
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'iter_1.pth'))
    return hashlib.sha256(content).hexdigest()[:16]


def test_flat_rows_and_committed_rows_are_read_back(tmp_path):
    plan = {r.name: r for r in study.build_plan('converge')}
    fp = plan['synthetic/retinanet/fp_s0']
    aqd = plan['synthetic/retinanet/aqd_w2_i300_s0']
    integer = plan['synthetic/retinanet/aqd_w2_i300_s0_integer']
    runs = tmp_path / 'runs'
    sha = _fake_fp_checkpoint(runs, fp.name, b'fp model')
    rows = [dict(study.asdict(run), config_sha256=study.config_sha256(run),
                 metrics={'coco/bbox_mAP': value}, seconds=1.0, command='c', start_sha256=sha)
            for run, value in ((fp, 0.6), (aqd, 0.5), (integer, 0.49))]
    path = tmp_path / 'accuracy_study.json'
    study.write_accuracy_study(rows, {}, str(path))
    flat = json.loads(path.read_text())
    assert [(r['method'], r['bits'], r['iters'], r['mAP'], r['fp_mAP']) for r in flat] == [
        ('fp', 32, 500, 0.6, 0.6), ('aqd', 2, 300, 0.5, 0.6), ('integer', 2, 300, 0.49, 0.6)]
    assert {'data', 'detector', 'method', 'bits', 'iters', 'seed', 'mAP', 'fp_mAP'} <= set(flat[0])
    committed = study.committed_rows(str(path))
    # a committed row with the same definition and FP model is reused without running ...
    assert study.start_model(aqd, str(runs), committed) == sha
    assert study.start_model(integer, str(runs), committed) == sha
    assert study.execute(aqd, str(runs), 'python', None, committed) == rows[1]
    # ... but not an FP row (its checkpoint is needed) nor a changed definition
    changed = dataclasses.replace(aqd, iters=301)
    with pytest.raises(RuntimeError, match='parent run .* has no checkpoint'):
        study.execute(changed, str(tmp_path / 'other'), 'python', None, committed)
    # rows of a later call come first, the committed ones not rerun after them
    study.write_accuracy_study(rows[:1], committed, str(path))
    assert [r['name'] for r in json.loads(path.read_text())] == [fp.name, aqd.name,
                                                                  integer.name]


def test_committed_rows_of_another_fp_model_are_neither_reused_nor_kept(tmp_path, monkeypatch):
    plan = {r.name: r for r in study.build_plan('converge')}
    fp = plan['synthetic/retinanet/fp_s0']
    aqd = plan['synthetic/retinanet/aqd_w2_i300_s0']
    fcos_fp = plan['synthetic/fcos/fp_s0']
    fcos_aqd = plan['synthetic/fcos/aqd_w2_i300_s0']
    runs = tmp_path / 'runs'
    old = hashlib.sha256(b'old fp model').hexdigest()[:16]
    rows = [dict(study.asdict(run), config_sha256=study.config_sha256(run),
                 metrics={'coco/bbox_mAP': 0.5}, seconds=1.0, command='c', start_sha256=old)
            for run in (fp, aqd, fcos_fp, fcos_aqd)]
    path = tmp_path / 'accuracy_study.json'
    study.write_accuracy_study(rows, {}, str(path))
    committed = study.committed_rows(str(path))
    # the RetinaNet FP model was retrained (the work dirs were lost): its old child is
    # trained again, not read back
    new = _fake_fp_checkpoint(runs, fp.name, b'new fp model')
    assert new != old
    assert study.start_model(aqd, str(runs), committed) == new
    calls = []
    monkeypatch.setattr(study.subprocess, 'call', lambda cmd, **kw: calls.append(cmd) or 1)
    with pytest.raises(RuntimeError, match='failed .exit 1'):
        study.execute(aqd, str(runs), 'python', None, committed)
    assert calls and calls[0][1].endswith('tools/train.py')
    # and, once the new FP row is written, the old RetinaNet child leaves the file; the
    # FCOS rows, whose FP model was not retrained, stay
    new_fp = dict(rows[0], metrics={'coco/bbox_mAP': 0.6}, start_sha256=new)
    study.write_accuracy_study([new_fp], committed, str(path))
    flat = json.loads(path.read_text())
    assert [(r['name'], r['mAP'], r['fp_mAP']) for r in flat] == [
        (fp.name, 0.6, 0.6), (fcos_fp.name, 0.5, 0.5), (fcos_aqd.name, 0.5, 0.5)]
