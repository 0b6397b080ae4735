"""QuantNaNGuardHook: a non-finite quantizer input is an error naming layer and iteration."""
import glob
import re
import os.path as osp
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from torch import nn

from mmaqd.engine import NonFiniteOutputError, NonFiniteQuantizerInputError, QuantNaNGuardHook
from mmaqd.quant import QConv
from mmdet.registry import HOOKS
from tests.conftest import ROOT

from .toy_runner import LossRecorder, toy_runner

LAYER = 'backbone.layer1.0.conv1'


def nested_model() -> nn.Module:
    """A QConv under the module name of a ResNet conv, with initialised 4-bit quantizers."""
    torch.manual_seed(0)
    conv = QConv(2, 3, 3, padding=1, w_bits=4, a_bits=4, input_quant='signed')
    block = nn.ModuleDict(dict(conv1=conv))
    model = nn.ModuleDict(dict(backbone=nn.ModuleDict(dict(layer1=nn.ModuleList([block])))))
    conv(torch.randn(1, 2, 4, 4))  # LSQ steps from a first batch
    return model


def conv_of(model: nn.Module) -> QConv:
    return model['backbone']['layer1'][0]['conv1']


def guarded(model: nn.Module, iteration: int = 7, **kwargs) -> QuantNaNGuardHook:
    hook = QuantNaNGuardHook(**kwargs)
    runner = SimpleNamespace(model=model, iter=iteration)
    hook.before_train(runner)
    hook.before_train_iter(runner, 0)
    return hook


def bad_input() -> torch.Tensor:
    x = torch.randn(2, 2, 4, 4)  # 64 values
    x[0, 0, 0, :3] = float('nan')
    x[1, 1, 2, :2] = float('inf')
    return x


def test_nan_input_is_named_with_layer_iteration_and_counts():
    model = nested_model()
    hook = guarded(model)
    assert hook.num_guarded == 2  # the weight and the input quantizer
    with pytest.raises(NonFiniteQuantizerInputError,
                       match=rf"quantizer '{LAYER}\.input_quantizers\.0' \(LSQQuantizer, 4 bits\) "
                       r'received 3 NaN and 2 Inf values \(of 64\) at train iteration 7'):
        conv_of(model)(bad_input())
    assert issubclass(NonFiniteQuantizerInputError, FloatingPointError)


def test_finite_input_passes_and_output_is_unchanged():
    model = nested_model()
    x = torch.randn(2, 2, 4, 4)
    expected = conv_of(model)(x)
    guarded(model)
    assert torch.equal(conv_of(model)(x), expected)


def test_nan_weight_and_nan_step_are_named():
    model = nested_model()
    guarded(model, iteration=3)
    with torch.no_grad():
        conv_of(model).weight[0, 0, 0, 0] = float('nan')
    with pytest.raises(NonFiniteQuantizerInputError,
                       match=rf"'{LAYER}\.weight_quantizer' .* received 1 NaN and 0 Inf values "
                       r'\(of 54\) at train iteration 3'):
        conv_of(model)(torch.randn(1, 2, 4, 4))
    model = nested_model()
    guarded(model, iteration=3)
    with torch.no_grad():
        conv_of(model).input_quantizer.step.fill_(float('inf'))
    with pytest.raises(NonFiniteQuantizerInputError,
                       match=rf"'{LAYER}\.input_quantizers\.0' .* has 0 NaN and 1 Inf values "
                       r"\(of 1\) in its 'step' at train iteration 3"):
        conv_of(model)(torch.randn(1, 2, 4, 4))


def test_check_every_skips_iterations_and_after_run_removes_the_checks():
    model = nested_model()
    hook = QuantNaNGuardHook(check_every=2)
    runner = SimpleNamespace(model=model, iter=0)
    hook.before_train(runner)
    runner.iter = 5
    hook.before_train_iter(runner, 5)
    conv_of(model)(bad_input())  # odd iteration: not checked
    hook.after_train_iter(runner, 5)
    runner.iter = 6
    hook.before_train_iter(runner, 6)
    with pytest.raises(NonFiniteQuantizerInputError, match='train iteration 6'):
        conv_of(model)(bad_input())
    hook.after_run(runner)
    assert hook.num_guarded == 0
    conv_of(model)(bad_input())


def test_val_batches_are_named_by_batch_and_train_iteration():
    model = nested_model()
    hook = QuantNaNGuardHook(modes=('val', ))
    runner = SimpleNamespace(model=model, iter=40)
    hook.before_train(runner)
    assert hook.num_guarded == 0  # 'train' not watched
    hook.before_val(runner)
    hook.before_val_iter(runner, 3)
    with pytest.raises(NonFiniteQuantizerInputError, match=r'val batch 3 \(train iteration 40\)'):
        conv_of(model)(bad_input())


class PoisonWeight(Hook):
    """Sets one weight of the toy model's 4-bit conv to NaN before iteration ``at``."""

    priority = 'LOWEST'

    def __init__(self, at: int) -> None:
        self.at = at

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        if runner.iter == self.at:
            with torch.no_grad():
                runner.model.conv.weight[0, 0, 0, 0] = float('nan')


def test_runner_stops_at_the_poisoned_iteration(tmp_path):
    losses = LossRecorder()
    with pytest.raises(NonFiniteQuantizerInputError,
                       match=r"quantizer 'conv\.weight_quantizer' \(LSQQuantizer, 3 bits\) "
                       r'received 1 NaN .* at train iteration 2'):
        toy_runner(str(tmp_path), 4, [QuantNaNGuardHook(), PoisonWeight(2), losses]).train()
    assert sorted(losses.losses) == [0, 1]


def test_hook_builds_from_config_and_refuses_bad_arguments():
    hook = HOOKS.build(dict(type='QuantNaNGuardHook', check_every=10))
    assert isinstance(hook, QuantNaNGuardHook) and hook.check_every == 10
    with pytest.raises(ValueError, match='check_every=0 is invalid'):
        QuantNaNGuardHook(check_every=0)
    with pytest.raises(ValueError, match=r"modes=\('train', 'eval'\) is invalid"):
        QuantNaNGuardHook(modes=('train', 'eval'))


def test_cpu_configs_keep_the_guard():
    """On in the CPU schedule, and repeated by every CPU config that sets its own hooks."""
    schedule = Config.fromfile(osp.join(ROOT, 'configs/_base_/schedules/cpu_iter.py'))
    assert 'QuantNaNGuardHook' in [h['type'] for h in schedule.custom_hooks]
    own_hooks = []
    for path in sorted(glob.glob(osp.join(ROOT, 'configs', 'aqd', '*.py'))):
        with open(path) as f:
            sets_hooks = 'custom_hooks' in f.read()
        if sets_hooks and '_coco' not in path:  # COCO configs use mmdet's schedules
            own_hooks.append(path)
            types = [h['type'] for h in Config.fromfile(path).custom_hooks]
            assert 'QuantNaNGuardHook' in types, osp.basename(path)
    assert len(own_hooks) >= 3


def head_model() -> nn.Module:
    """A quantized tower conv, then an FP predictor and a loss module: nothing after them."""
    model = nested_model()
    model['bbox_head'] = nn.ModuleDict(dict(retina_cls=nn.Conv2d(3, 2, 1),
                                            loss_cls=nn.SmoothL1Loss()))
    return model


def head_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model['bbox_head']['retina_cls'](conv_of(model)(x))
    return model['bbox_head']['loss_cls'](out, torch.zeros_like(out))


def test_nan_after_the_last_quantizer_names_the_first_module():
    model = head_model()
    with torch.no_grad():
        model['bbox_head']['retina_cls'].bias[1] = float('nan')
    hook = QuantNaNGuardHook()
    runner = SimpleNamespace(model=model, iter=5)
    hook.before_test(runner)
    hook.before_test_iter(runner, 2)
    with pytest.raises(NonFiniteOutputError, match=re.escape(
            "module 'bbox_head.retina_cls' (Conv2d) output 0 has 16 NaN and 0 Inf values (of "
            "32) at test batch 2 (train iteration 5); it is the first module whose output is "
            "not finite")):
        head_forward(model, torch.randn(1, 2, 4, 4))
    assert issubclass(NonFiniteOutputError, FloatingPointError)
    hook.after_test_iter(runner, 2)
    head_forward(model, torch.randn(1, 2, 4, 4))  # unguarded between iterations


def test_nan_loss_is_named_by_its_module_and_in_the_logged_outputs():
    model = head_model()
    guarded(model, iteration=4)
    target = torch.full((1, 2, 4, 4), float('inf'))
    out = model['bbox_head']['retina_cls'](conv_of(model)(torch.randn(1, 2, 4, 4)))
    with pytest.raises(NonFiniteOutputError, match=r"module 'bbox_head\.loss_cls' "
                                                   r'\(SmoothL1Loss\) output 0 has 0 NaN and 1 '
                                                   r'Inf values \(of 1\) at train iteration 4'):
        model['bbox_head']['loss_cls'](out, target)
    hook = guarded(model, iteration=4)
    runner = SimpleNamespace(model=model, iter=4)
    with pytest.raises(NonFiniteOutputError, match=r"loss = nan at train iteration 4"):
        hook.after_train_iter(runner, 0, outputs=dict(loss=torch.tensor(float('nan'))))
    hook.before_train_iter(runner, 0)
    hook.after_train_iter(runner, 0, outputs=dict(loss=torch.tensor(0.5)))
