"""BitWidthScheduleHook: stages, step rescaling, momentum reset, exact resume, bad input."""
import os.path as osp
import re
from types import SimpleNamespace

import pytest
import torch
from mmengine.logging import MMLogger

from mmaqd.engine import BitWidthScheduleHook
from tests.dist_utils import run_distributed

from .toy_runner import LossRecorder, ToyQModel, toy_runner

SCHEDULE = [dict(begin=0, bits=8), dict(begin=3, bits=4)]


def fake_runner(model, iteration=0):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return SimpleNamespace(model=model, iter=iteration, epoch=0, logger=MMLogger.get_instance(
        'mmaqd_test_hooks'), optim_wrapper=SimpleNamespace(optimizer=optimizer), _resume=False)


def test_stage_change_sets_bits_rescales_steps_and_resets_momentum():
    model = ToyQModel(w_bits=8, a_bits=8)
    hook = BitWidthScheduleHook(SCHEDULE, exclude=[r'^stem$'])
    runner = fake_runner(model)
    hook.before_run(runner)
    hook.before_train(runner)
    assert (model.conv.w_bits, model.conv.a_bits, model.stem.w_bits) == (8, 8, 8)
    # One optimizer step so that every parameter has momentum.
    model(torch.ones(2, 3, 8, 8), torch.zeros(2, 4), mode='loss')['loss'].backward()
    runner.optim_wrapper.optimizer.step()
    step_before = model.conv.weight_quantizer.step.detach().clone()
    input_step_before = model.conv.input_quantizer.step.detach().clone()
    state = runner.optim_wrapper.optimizer.state
    assert model.conv.weight_quantizer.step in state and model.stem.weight_quantizer.step in state

    runner.iter = 2
    hook.before_train_iter(runner, 2)
    assert model.conv.w_bits == 8 and hook.stage == 0
    runner.iter = 3
    hook.before_train_iter(runner, 3)
    assert (model.conv.w_bits, model.conv.a_bits, model.stem.w_bits) == (4, 4, 8)
    assert hook.stage == 1
    # default 'lsq' rescale: sqrt(Qp_old / Qp_new), signed weights 127 / 7, inputs 255 / 15
    assert torch.allclose(model.conv.weight_quantizer.step, step_before * (127 / 7)**0.5)
    assert torch.allclose(model.conv.input_quantizer.step, input_step_before * 17**0.5)
    assert model.conv.weight_quantizer.step not in state
    assert model.conv.input_quantizer.step not in state
    assert model.stem.weight_quantizer.step in state  # excluded: untouched
    assert model.conv.weight in state  # weights keep their momentum


def test_range_rescale_keeps_the_clipping_range():
    model = ToyQModel(w_bits=8, a_bits=8)
    hook = BitWidthScheduleHook([dict(begin=0, bits=8), dict(begin=1, bits=4)],
                                pattern='^conv$', step_rescale='range')
    runner = fake_runner(model)
    hook.before_run(runner)
    hook.before_train(runner)
    model(torch.ones(1, 3, 8, 8), mode='tensor')  # LSQ initialises its steps
    before = (model.conv.weight_quantizer.step.item(), model.conv.input_quantizer.step.item())
    runner.iter = 1
    hook.before_train_iter(runner, 1)
    assert model.conv.weight_quantizer.step.item() == pytest.approx(before[0] * 127 / 7)
    assert model.conv.input_quantizer.step.item() == pytest.approx(before[1] * 255 / 15)
    with pytest.raises(ValueError, match="step_rescale='keep' is invalid"):
        BitWidthScheduleHook(SCHEDULE, step_rescale='keep')


def test_weights_and_activations_can_follow_separate_schedules():
    model = ToyQModel(w_bits=8, a_bits=8)
    hook = BitWidthScheduleHook([dict(begin=0, w_bits=4), dict(begin=5, a_bits=2)],
                                pattern=r'^conv$')
    runner = fake_runner(model)
    hook.before_run(runner)
    hook.before_train(runner)
    assert (model.conv.w_bits, model.conv.a_bits) == (4, 8)
    runner.iter = 5
    hook.before_train_iter(runner, 5)
    assert (model.conv.w_bits, model.conv.a_bits) == (4, 2)


@pytest.mark.parametrize('save_at', [2, 4], ids=['before-change', 'after-change'])
def test_resume_reproduces_the_uninterrupted_run(tmp_path, save_at):
    full = LossRecorder()
    toy_runner(str(tmp_path / 'full'), 6, [BitWidthScheduleHook(SCHEDULE), full]).train()
    first = LossRecorder()
    toy_runner(str(tmp_path / 'part'), save_at, [BitWidthScheduleHook(SCHEDULE), first],
               ckpt_interval=save_at).train()
    ckpt = osp.join(tmp_path, 'part', f'iter_{save_at}.pth')
    rest = LossRecorder()
    hook = BitWidthScheduleHook(SCHEDULE)
    toy_runner(str(tmp_path / 'part'), 6, [hook, rest], resume=True, load_from=ckpt).train()
    assert sorted(first.losses) == list(range(save_at))
    assert sorted(rest.losses) == list(range(save_at, 6))
    for i in range(6):
        assert (first.losses.get(i, rest.losses.get(i))) == full.losses[i], i
    assert hook.stage == 1


def test_resume_refuses_another_schedule_or_none(tmp_path):
    toy_runner(str(tmp_path), 2, [BitWidthScheduleHook(SCHEDULE)]).train()
    ckpt = osp.join(tmp_path, 'iter_2.pth')
    other = [dict(begin=0, bits=8), dict(begin=4, bits=4)]
    with pytest.raises(ValueError, match=r"saved with bit schedule .*'begin': 3.*this run has "
                                         r".*'begin': 4"):
        toy_runner(str(tmp_path), 6, [BitWidthScheduleHook(other)], resume=True,
                   load_from=ckpt).train()
    toy_runner(str(tmp_path / 'plain'), 2).train()
    with pytest.raises(ValueError, match='has no bit schedule'):
        toy_runner(str(tmp_path / 'plain'), 6, [BitWidthScheduleHook(SCHEDULE)], resume=True,
                   load_from=osp.join(tmp_path, 'plain', 'iter_2.pth')).train()
    # A failed resume leaves the checkpoint as it was.
    assert osp.getsize(ckpt) > 0 and torch.load(ckpt, weights_only=False)['meta']['iter'] == 2


@pytest.mark.parametrize('schedule, message', [
    ([dict(begin=0, bits=8), dict(begin=0, bits=4)], r'schedule\[1\].*begin=0 does not increase'),
    ([dict(begin=5, bits=8), dict(begin=2, bits=4)], r'schedule\[1\].*begin=2 does not increase'),
    ([dict(begin=0, bits=9)], r'schedule\[0\].*w_bits.*9'),
    ([dict(begin=0, bits='4')], r"schedule\[0\].*'4'"),
    ([dict(begin=0, bits=3.5)], r'schedule\[0\].*3\.5'),
    ([dict(begin=0, bits=None)], r'schedule\[0\].*needs bits'),
    ([dict(begin=-1, bits=4)], r'schedule\[0\].*begin must be an int >= 0, got -1'),
    ([dict(begin=0, bits=4, w_bits=4)], r'schedule\[0\].*either bits or w_bits'),
    ([dict(begin=0, bitz=4)], r"schedule\[0\].*unknown key\(s\) \['bitz'\]"),
    ([], 'non-empty list'),
])
def test_bad_schedules_are_refused_at_construction(schedule, message):
    with pytest.raises(ValueError, match=message):
        BitWidthScheduleHook(schedule)


def test_patterns_that_match_nothing_are_refused_before_training():
    runner = fake_runner(ToyQModel())
    with pytest.raises(ValueError, match=r"pattern '\^head' matches no QConv"):
        BitWidthScheduleHook(SCHEDULE, pattern='^head').before_run(runner)
    with pytest.raises(ValueError, match=r"exclude pattern 'neck' matches no QConv"):
        BitWidthScheduleHook(SCHEDULE, exclude=['neck']).before_run(runner)
    with pytest.raises(ValueError, match='not a valid regular expression'):
        BitWidthScheduleHook(SCHEDULE, pattern='(')


def _stages_under_ddp(rank: int) -> tuple:
    """In a gloo process: the error of a 32 -> 4-bit stage, and an 8 -> 4-bit stage's bits."""
    from mmengine.model import MMDistributedDataParallel

    model = ToyQModel(w_bits=32, a_bits=32)
    trainable_at_32 = model.conv.weight_quantizer.step.requires_grad
    runner = fake_runner(MMDistributedDataParallel(model, device_ids=None))
    hook = BitWidthScheduleHook([dict(begin=0, bits=32), dict(begin=2, bits=4)],
                                exclude=[r'^stem$'])
    hook.before_run(runner)
    hook.before_train(runner)  # 32 -> 32: nothing changes
    runner.iter = 2
    try:
        hook.before_train_iter(runner, 2)
        error = None
    except ValueError as err:
        error = str(err)
    # between quantized widths the trained parameters stay the same: allowed
    model = ToyQModel(w_bits=8, a_bits=8)
    runner = fake_runner(MMDistributedDataParallel(model, device_ids=None))
    hook = BitWidthScheduleHook(SCHEDULE, exclude=[r'^stem$'])
    hook.before_run(runner)
    hook.before_train(runner)
    runner.iter = 3
    hook.before_train_iter(runner, 3)
    return trainable_at_32, error, model.conv.w_bits


def test_under_ddp_a_stage_to_or_from_32_bits_is_refused():
    """DDP fixes the trained parameters at wrapping; a quantizer trains only while it quantizes."""
    trainable_at_32, error, bits = run_distributed(_stages_under_ddp, 1)[0]
    assert not trainable_at_32
    assert re.search(r'stage 1 switches 2 quantizers between 32 bits and quantized \(conv '
                     r'\(QConv weight quantizer: 32 -> 4 bits\).* under '
                     r'MMDistributedDataParallel', error), error
    assert bits == 4
