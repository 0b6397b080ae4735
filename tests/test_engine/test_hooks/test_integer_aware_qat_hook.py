"""IntegerAwareQATHook: switches the layers, keeps the engine's units up to date."""
from types import SimpleNamespace

import pytest
import torch
from mmengine.logging import MMLogger

from mmaqd.engine.hooks import IntegerAwareQATHook
from mmaqd.integer import convert_detector
from mmaqd.integer.compare import code_agreement
from tests.test_integer.tiny_detectors import tiny_detector, tiny_images


def fake_runner(model, iteration=0):
    return SimpleNamespace(model=model, iter=iteration,
                           logger=MMLogger.get_instance('test_integer_aware_qat_hook'))


def test_units_follow_the_scales_every_interval():
    model = tiny_detector('retinanet', 4).train()
    hook = IntegerAwareQATHook(interval=2)
    runner = fake_runner(model)
    hook.before_train(runner)
    assert model.backbone.layer1[0].add.simulate_alignment
    hook.before_train_iter(runner, 0)
    unit = model.backbone.norm1.input_unit.clone()
    assert torch.allclose(unit, model.backbone.conv1.accumulator_unit().double())
    assert hook.last_counts['add'] == 10
    with torch.no_grad():
        model.backbone.conv1.weight_quantizer.step.mul_(2)
    runner.iter = 1  # not an update iteration
    hook.before_train_iter(runner, 1)
    assert torch.equal(model.backbone.norm1.input_unit, unit)
    runner.iter = 2
    hook.before_train_iter(runner, 2)
    assert torch.allclose(model.backbone.norm1.input_unit, 2 * unit)
    assert model.training  # the conversion's eval mode was undone


def test_before_test_the_model_predicts_the_engine_integers():
    model = tiny_detector('fcos', 2)
    hook = IntegerAwareQATHook()
    hook.before_test_epoch(fake_runner(model))
    engine = convert_detector(model)
    x = tiny_images(1, seed=5)
    with torch.no_grad():
        fake_quant = model.bbox_head.raw_forward(model.neck(model.backbone(x)))
    stats = code_agreement(engine(x), fake_quant, engine.head.output_units())
    assert stats['equal_fraction'] == 1.0


def test_a_bad_interval_is_refused():
    with pytest.raises(ValueError, match='interval must be a positive int, got 0'):
        IntegerAwareQATHook(interval=0)


def test_a_model_without_integer_form_is_reported_once_and_trains_on(caplog):
    from tests.test_integer.tiny_detectors import tiny_config
    cfg = tiny_config('fcos', 4)
    cfg.model.bbox_head.norm_cfg = dict(type='GN', num_groups=4)
    model = tiny_detector('fcos', 4, cfg=cfg).train()
    hook = IntegerAwareQATHook()
    runner = fake_runner(model)
    warnings = []
    runner.logger = SimpleNamespace(info=lambda msg: None, warning=warnings.append)
    hook.before_train(runner)
    for iteration in range(3):
        runner.iter = iteration
        hook.before_train_iter(runner, iteration)
    assert len(warnings) == 1 and hook.last_counts is None
    assert 'GroupNorm' in warnings[0] and 'Remove the hook from custom_hooks' in warnings[0]
    assert model.backbone.norm1.input_unit is None


def test_a_failed_conversion_clears_the_earlier_units(monkeypatch):
    """Units of an earlier conversion would not match the scales learned since."""
    from mmaqd.engine.hooks import integer_aware_qat_hook as module
    from mmaqd.integer import ConversionError
    model = tiny_detector('retinanet', 4).train()
    hook = IntegerAwareQATHook()
    runner = fake_runner(model)
    runner.logger = SimpleNamespace(info=lambda msg: None, warning=lambda msg: None)
    hook.before_train(runner)
    hook.before_train_iter(runner, 0)
    requant = model.bbox_head.retina_cls.input_quantizers[0]
    assert model.backbone.norm1.input_unit is not None and requant.engine_requant is not None

    def fail(_):
        raise ConversionError('a BN gamma vanished')
    monkeypatch.setattr(module, 'sync_engine_units', fail)
    runner.iter = 1
    hook.before_train_iter(runner, 1)
    assert model.backbone.norm1.input_unit is None and requant.engine_requant is None
    assert hook.last_counts is None
    assert model.backbone.norm1.simulate_bias_rounding and requant.round_half_up  # still on
