"""tools/analysis/level_stats.py: per-level moments of the head's norm inputs."""
import math

import torch

from mmaqd.models.layers.level_conv_module import conv_at_level
from tests.conftest import load_tool
from tests.test_integer.tiny_detectors import tiny_detector, tiny_images

level_stats = load_tool('analysis/level_stats.py')


def test_recorded_moments_equal_the_norm_input_computed_directly():
    model = tiny_detector('retinanet', 4)
    images = tiny_images(2, seed=5)
    stats = level_stats.collect(model, [images])
    assert len(stats) == 4  # 2 cls + 2 reg tower blocks
    assert sorted(stats['bbox_head.cls_convs.0.norm']) == [0, 1, 2, 3, 4]
    with torch.no_grad():
        feats = model.neck(model.backbone(images))
        block = model.bbox_head.cls_convs[0]
        for level in (0, 3):
            x = conv_at_level(block.conv, feats[level], level).double()
            got = stats['bbox_head.cls_convs.0.norm'][level]
            assert torch.allclose(got['mean'], x.mean((0, 2, 3)), atol=1e-9)
            assert torch.allclose(got['std'], x.std((0, 2, 3), unbiased=False), atol=1e-6)


def test_level_spread_by_hand():
    ones = torch.ones(2, dtype=torch.float64)
    stats = {'n': {0: {'mean': 0 * ones, 'std': ones}, 1: {'mean': 2 * ones, 'std': 3 * ones}}}
    summary = level_stats.summarise(stats)['n']
    # std over the 2 levels of the channel means (0, 2) is sqrt(2); mean channel std is 2
    assert math.isclose(summary['level_spread'], math.sqrt(2) / 2)
    assert math.isclose(summary['std_ratio_max_min'], 3.0)
    assert summary['levels'][1] == {'mean_of_means': 2.0, 'mean_of_stds': 3.0}


def test_plot_writes_a_png(tmp_path):
    ones = torch.ones(3, dtype=torch.float64)
    stats = {'n': {k: {'mean': k * ones, 'std': ones} for k in range(2)}}
    path = str(tmp_path / 'fig.png')
    level_stats.plot(stats, 'n', path, 'test')
    with open(path, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
