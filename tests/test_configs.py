"""Every config under configs/aqd loads, builds, and has AQD's FP architecture."""
import glob
import json
import os.path as osp

import pytest
import torch
import yaml
from mmengine.config import Config

import mmaqd  # noqa: F401
from mmaqd.quant import MultiLevelBN, QConv
from mmdet.registry import HOOKS, MODELS
from mmdet.utils import register_all_modules
from tests.conftest import ROOT, load_script

register_all_modules()
report = load_script('.dev_scripts/study/study_report.py')
CONFIGS = sorted(glob.glob(osp.join(ROOT, 'configs', 'aqd', '*.py')))


def test_configs_exist_for_both_detectors_depths_bits_and_data_sets():
    names = {osp.basename(c) for c in CONFIGS}
    for algo in ('retinanet', 'fcos'):
        for bits in ('fp32', 'w8a8', 'w4a4', 'w3a3', 'w2a2'):
            for depth in (18, 34, 50):
                assert f'{algo}_r{depth}_fpn_aqd-{bits}_1x_coco.py' in names
            for data in ('synthetic', 'neon-trees'):
                assert f'{algo}_r18_fpn_aqd-{bits}_{data}.py' in names
        for suffix in ('synthetic', '1x_coco'):
            assert f'{algo}_r18_fpn_aqd-progressive-w2a2_{suffix}.py' in names


@pytest.mark.parametrize('path', CONFIGS, ids=[osp.basename(c) for c in CONFIGS])
def test_config_builds_with_aqd_fp_architecture(path):
    cfg = Config.fromfile(path)
    assert cfg.custom_imports.imports == ['mmaqd']
    pre = cfg.model.data_preprocessor
    assert all(float(m).is_integer() for m in pre.mean) and list(pre.std) == [1, 1, 1]
    assert cfg.model.neck.norm_cfg.type in ('BN', 'QBN', 'SyncQBN')
    assert cfg.model.neck.act_cfg.type == 'ReLU'
    # Built on the meta device: structure and settings only, no weight allocation.
    with torch.device('meta'):
        model = MODELS.build(cfg.model)
    name = osp.basename(path)
    if '-fp32_' in name:
        assert not any(isinstance(m, QConv) for m in model.modules())
    else:
        bits = int(name.split('-w')[1][0])
        assert model.quant_cfg['w_bits'] == model.quant_cfg['a_bits'] == bits
        assert model.backbone.conv1.w_bits == 8
        # quantized fine-tunes start from an FP checkpoint
        assert cfg.load_from and '-fp32_' in cfg.load_from
    # custom hooks build, and their layer patterns fit this model
    for hook_cfg in cfg.get('custom_hooks', []):
        hook = HOOKS.build(hook_cfg)
        if hasattr(hook, 'selected_convs'):
            chosen = hook.selected_convs(model)
            assert 'backbone.conv1' not in chosen and len(chosen) > 20
    assert type(model.bbox_head).__name__ in ('AQDRetinaHead', 'AQDFCOSHead')
    # checkpoint checks (FP too) and crash-safe saving in every config
    assert type(model).__name__ in ('AQDRetinaNet', 'AQDFCOS')
    assert cfg.default_hooks.checkpoint.type == 'AtomicCheckpointHook'
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        assert cfg[loader].dataset.type == 'CheckedCocoDataset', loader
    level_bns = [m for m in model.bbox_head.modules() if isinstance(m, MultiLevelBN)]
    assert level_bns and all(bn.num_levels == len(model.neck.fpn_convs) for bn in level_bns)
    # conv -> BN -> ReLU on every FPN conv
    for block in list(model.neck.lateral_convs) + list(model.neck.fpn_convs):
        assert block.with_norm and block.with_activation


def test_model_zoo_metafile_names_configs_that_exist_and_build():
    with open(osp.join(ROOT, 'configs', 'aqd', 'metafile.yml')) as f:
        meta = yaml.safe_load(f)
    assert [c['Name'] for c in meta['Collections']] == ['AQD']
    models = meta['Models']
    assert len(models) == 12  # 2 detectors x 2 data sets x 4/3/2 bits
    for model in models:
        assert model['In Collection'] == 'AQD'
        path = osp.join(ROOT, model['Config'])
        assert osp.isfile(path), path
        assert model['Name'] == osp.splitext(osp.basename(path))[0]
        box_ap = model['Results'][0]['Metrics']['box AP']
        assert 0 < box_ap < 100
        with torch.device('meta'):
            MODELS.build(Config.fromfile(path).model)


def test_model_zoo_page_is_what_the_report_generates_from_the_committed_results():
    """configs/aqd/README.md and metafile.yml agree with docs/results/benchmarks.json."""
    with open(osp.join(ROOT, 'docs', 'results', 'benchmarks.json')) as f:
        results = json.load(f)
    for name, text in (('README.md', report.zoo_page(results, 'docs/results/benchmarks.json')),
                       ('metafile.yml', report.zoo_metafile(results))):
        with open(osp.join(ROOT, 'configs', 'aqd', name)) as f:
            assert f.read() == text, f'configs/aqd/{name} is stale: rerun study_report.py'
