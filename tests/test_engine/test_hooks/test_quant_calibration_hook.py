"""QuantCalibrationHook in a Runner: scales from N batches, resume untouched, bad input."""
import math
import os.path as osp

import pytest
import torch

from mmaqd.engine import QuantCalibrationHook, quantizers_to_calibrate
from mmaqd.quant.calibration import mse_scale

from .toy_runner import ToyQModel, toy_runner


def test_scales_come_from_the_calibration_batches(tmp_path):
    torch.manual_seed(0)
    model = ToyQModel(w_bits=4, a_bits=4)
    seen = []
    model.conv.input_quantizer.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    runner = toy_runner(str(tmp_path), 1, [QuantCalibrationHook(num_batches=3)], model=model)
    weight_before = model.conv.weight.detach().clone()
    stem_weight = model.stem.weight.detach().clone()
    hook = runner._hooks[[type(h) for h in runner._hooks].index(QuantCalibrationHook)]
    hook.before_train(runner)  # what runner.train() calls first
    assert len(seen) == 3 and all(bool(q.initialized) for q in quantizers_of(model))
    # 4-bit input (unsigned, Qp = 15): LSQ rule over the three batches
    inputs = torch.cat([s.flatten() for s in seen])
    assert model.conv.input_quantizer.step.item() == pytest.approx(
        2 * inputs.abs().mean().item() / math.sqrt(15), rel=1e-5)
    # 4-bit weight (signed, Qp = 7) and the 8-bit stem weight (0.8 x max / 127)
    assert model.conv.weight_quantizer.step.item() == pytest.approx(
        2 * weight_before.abs().mean().item() / math.sqrt(7), rel=1e-5)
    assert model.stem.weight_quantizer.step.item() == pytest.approx(
        0.8 * stem_weight.abs().max().item() / 127, rel=1e-5)
    assert model.training  # back in train mode


def test_mse_rule_sets_the_least_error_steps(tmp_path):
    torch.manual_seed(0)
    model = ToyQModel(w_bits=2, a_bits=2)
    seen = []
    model.conv.input_quantizer.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    runner = toy_runner(str(tmp_path), 1, [QuantCalibrationHook(num_batches=2, rule='mse')],
                        model=model)
    weight = model.conv.weight.detach().clone()
    hook = runner._hooks[[type(h) for h in runner._hooks].index(QuantCalibrationHook)]
    hook.before_train(runner)
    # 2-bit weight (codes -2..1) and input (codes 0..3): the searched steps
    assert model.conv.weight_quantizer.step.item() == pytest.approx(
        mse_scale(weight.view(1, -1), -2, 1).item(), rel=1e-6)
    inputs = torch.cat([s.flatten() for s in seen]).view(1, -1)
    assert model.conv.input_quantizer.step.item() == pytest.approx(
        mse_scale(inputs, 0, 3).item(), rel=1e-6)
    # below LSQ's first-batch rule for the weight
    assert model.conv.weight_quantizer.step.item() < 2 * weight.abs().mean().item()


def quantizers_of(model):
    return [model.stem.weight_quantizer, model.conv.weight_quantizer,
            model.conv.input_quantizer]


def test_initialised_quantizers_are_left_alone_on_resume(tmp_path):
    toy_runner(str(tmp_path), 2, [QuantCalibrationHook(num_batches=2)]).train()
    ckpt = osp.join(tmp_path, 'iter_2.pth')
    saved = torch.load(ckpt, weights_only=False)['state_dict']
    runner = toy_runner(str(tmp_path), 2, [QuantCalibrationHook(num_batches=2)], resume=True,
                        load_from=ckpt)
    runner.train()  # already at max_iters: loads, calibrates nothing, trains nothing
    assert quantizers_to_calibrate(runner.model) == {}
    assert torch.equal(runner.model.conv.input_quantizer.step,
                       saved['conv.input_quantizers.0.step'])


def test_force_and_selection():
    model = ToyQModel(w_bits=4, a_bits=32)
    names = set(quantizers_to_calibrate(model))
    assert names == {'stem.weight_quantizer', 'conv.weight_quantizer'}  # 32-bit input: none
    model.conv.weight_quantizer.initialized.fill_(True)
    assert set(quantizers_to_calibrate(model)) == {'stem.weight_quantizer'}
    assert set(quantizers_to_calibrate(model, force=True)) == names


@pytest.mark.parametrize('kwargs, message', [
    (dict(num_batches=0), 'num_batches=0 is invalid'),
    (dict(num_batches=2.5), 'num_batches=2.5 is invalid'),
    (dict(rule='median'), "rule='median' is invalid"),
    (dict(eight_bit_rule='min'), "eight_bit_rule='min' is invalid"),
    (dict(percentile=120), 'percentile=120 is invalid'),
])
def test_bad_settings_are_refused_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        QuantCalibrationHook(**kwargs)
