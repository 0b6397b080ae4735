"""The benchmark tools' timing helpers by hand; detector_costs.py and qat_step_costs.py run
on tiny inputs."""
import json
import os.path as osp

import pytest

from mmaqd.utils import timing
from tests.conftest import ROOT, load_tool


costs = load_tool('benchmarks/detector_costs.py')

CONFIGS = [osp.join(ROOT, 'configs', 'aqd', f'retinanet_r18_fpn_aqd-{name}_synthetic.py')
           for name in ('fp32', 'w4a4', 'w2a2')]


def test_interleaved_times_take_turns_after_the_warmup():
    calls = []
    fns = {name: (lambda n: lambda: calls.append(n))(name) for name in 'ab'}
    times = timing.interleaved_times(fns, repeats=2, warmup=1)
    assert calls == ['a', 'b'] * 3
    assert sorted(times) == ['a', 'b'] and all(len(t) == 2 for t in times.values())
    with pytest.raises(ValueError, match='repeats >= 1'):
        timing.interleaved_times(fns, repeats=0)


def test_median_ratio_is_the_median_of_per_round_ratios():
    times = {'q': [1.0, 4.0, 3.0], 'fp': [2.0, 2.0, 2.0]}
    assert timing.median_ratio(times, 'q', 'fp') == 1.5  # of 0.5, 2.0, 1.5
    # not the ratio of medians: a slow round slows both
    assert timing.median_ratio({'q': [2.0, 20.0, 2.2], 'fp': [1.0, 10.0, 1.0]}, 'q',
                               'fp') == 2.0


def test_load_models_refuses_a_wrong_order_or_count():
    with pytest.raises(ValueError, match='first config must be the FP'):
        costs.load_models(CONFIGS[1:], None, 64)
    with pytest.raises(ValueError, match='3 configs but 1 checkpoints'):
        costs.load_models(CONFIGS, ['a.pth'], 64)
    with pytest.raises(ValueError, match='two configs named w4a4'):
        costs.load_models([CONFIGS[0], CONFIGS[1], CONFIGS[1]], None, 64)


def test_costs_of_tiny_detectors(tmp_path):
    out = tmp_path / 'costs.json'
    result = costs.main([*CONFIGS, '--repeats', '1', '--batch', '2', '--size', '64',
                         '--out', str(out)])
    assert out.is_file()
    assert set(result['train_step_vs_fp']) == {'w4a4', 'w2a2'}
    for name, ratio in result['train_step_vs_fp'].items():  # one round: the plain ratio
        assert ratio == pytest.approx(result['train_step_seconds'][name]
                                      / result['train_step_seconds']['FP'])
    assert {'w2a2 fake-quant', 'w2a2 integer engine', 'w2a2 float64 simulation'} <= set(
        result['forward_vs_fp'])
    sizes = result['file_vs_fp32']
    # 2- and 4-bit weights (8-bit stem and predictors) packed: well under 1/4 of FP32
    assert sizes['w2a2 integer export'] < sizes['w4a4 integer export'] < 0.25
    assert result['file_bytes']['FP fp32 weights'] > 4 * 11e6  # ResNet-18 alone: 11.7 M
    if 'w4a4 onnx' in sizes:  # with the deploy extra
        assert sizes['w4a4 onnx'] < 0.5


def test_deploy_speed_runs_every_runtime_on_a_tiny_input(tmp_path):
    # Structure only (which runtimes ran, the kernel graph check, the JSON); never speed.
    speed = load_tool('benchmarks/deploy_speed.py')
    out = str(tmp_path / 'speed.json')
    result = speed.main(['--config', CONFIGS[2], '--fp-config', CONFIGS[0], '--sizes', '64',
                         '--threads', '1', '--rounds', '1', '--no-engine', '--profile',
                         '--out', out])
    assert result['kernel_graph']['all_integer'] and result['kernel_graph']['float_convs'] == 0
    (row, ) = result['runs']
    assert {'fp_torch', 'fp_onnx', 'kernels', 'qdq'} <= set(row['median_ms'])
    assert set(row['kernels_speedup_vs']) == set(row['median_ms']) - {'kernels'}
    assert result['kernel_profile_ms']['by_op']['QLinearConv'] > 0
    assert result['machine']['cores'] >= 1
    with open(out) as f:
        assert json.load(f)['runs'] == result['runs']
    with pytest.raises(SystemExit):
        speed.parse_args(['--rounds', '0'])


def test_deploy_accuracy_refuses_a_pair_without_checkpoint(capsys):
    accuracy = load_tool('benchmarks/deploy_accuracy.py')
    with pytest.raises(SystemExit):
        accuracy.parse_args([CONFIGS[1], '--out', 'x.json'])
    assert 'is not CONFIG=CHECKPOINT' in capsys.readouterr().err


def test_qat_step_costs_time_the_four_variants(tmp_path):
    step_costs = load_tool('benchmarks/qat_step_costs.py')
    out = tmp_path / 'steps.json'
    result = step_costs.main([CONFIGS[2], CONFIGS[0], '--repeats', '1', '--batch', '2',
                              '--size', '64', '--out', str(out)])
    assert json.loads(out.read_text()) == result
    assert set(result['ratio_to_plain']) == set(step_costs.VARIANTS)
    assert result['ratio_to_plain']['plain'] == 1.0
    for name, ratio in result['ratio_to_plain'].items():  # one round: the plain ratio
        assert ratio == pytest.approx(result['seconds'][name] / result['seconds']['plain'])
