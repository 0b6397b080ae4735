"""tools/verify_integer.py: the proof's summary, JSON line and exit code."""
import json

import pytest

from tests.conftest import load_tool

verify = load_tool('verify_integer.py')

TINY = ['--cfg-options', 'model.backbone.base_channels=8', 'model.neck.in_channels=[8,16,32,64]',
        'model.neck.out_channels=16', 'model.bbox_head.in_channels=16',
        'model.bbox_head.feat_channels=16']


@pytest.mark.parametrize('config, bits', [
    ('configs/aqd/retinanet_r18_fpn_aqd-w4a4_synthetic.py', 2),
    ('configs/aqd/fcos_r18_fpn_aqd-w4a4_synthetic.py', 3),
])
def test_random_init_model_is_proven_integer(config, bits, capsys):
    result = verify.main([config, '--random-init', '--bits', str(bits), '--num-images', '1',
                          '--size', '64', *TINY])
    out = capsys.readouterr().out.strip().splitlines()
    assert json.loads(out[-1]) == result
    assert result['bits'] == bits and result['output_dtypes'] == ['torch.int64']
    assert result['equal_fraction'] == 1.0 and result['max_abs_diff'] == 0.0
    assert 0.0 <= result['vs_fakequant_equal_fraction'] <= 1.0
    assert result['vs_fakequant_relative_error'] >= 0.0  # reported; see test_detector.py
    # the integer-aware forward is the engine: every code equal
    assert result['vs_integer_aware_equal_fraction'] == 1.0
    assert result['vs_integer_aware_max_lsb'] < 0.5
    assert any(line.startswith('integer == simulation: 100.00%') for line in out)
    assert result['passed'] is True
    assert out[-2].startswith('PASS: the int64 engine equals its float64 simulation on 100.00% '
                              'of') and out[-2].endswith('(required: 100%, int64 outputs)')
    # quiet by default: no per-module weight-init lines from mmengine
    assert not any('init' in line.lower() and 'weight' in line.lower() for line in out)


def test_needs_a_checkpoint_or_random_init():
    with pytest.raises(SystemExit):
        verify.main(['configs/aqd/retinanet_r18_fpn_aqd-w4a4_synthetic.py'])
