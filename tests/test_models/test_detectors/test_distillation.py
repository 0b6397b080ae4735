"""Distillation from the FP model: the losses, a frozen teacher outside the student."""
import math

import pytest
import torch
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData

from mmaqd.models.detectors.distillation import Distiller, build_distiller
from tests.test_integer.tiny_detectors import tiny_config, tiny_detector, tiny_images


def test_losses_are_the_formulas():
    distiller = Distiller('t.py', 't.pth', feature_weight=2.0, logit_weight=3.0, temperature=2.0)
    student_feats = [torch.zeros(1, 1, 1, 2), torch.ones(1, 1, 1, 1)]
    teacher_feats = [torch.tensor([[[[1.0, 3.0]]]]), torch.ones(1, 1, 1, 1)]
    student_cls = [torch.zeros(1, 1, 1, 1)]
    teacher_cls = [torch.full((1, 1, 1, 1), 2 * math.log(3.0))]  # sigmoid(t / 2) = 3/4
    losses = distiller.losses(student_feats, student_cls, teacher_feats, teacher_cls)
    # levels: mean((0-1)^2, (0-3)^2) = 5 and 0 -> 2.5, times 2
    assert losses['loss_distill_feat'].item() == pytest.approx(5.0)
    # BCE(sigmoid(0) = 1/2 against 3/4) = -(3/4 ln 1/2 + 1/4 ln 1/2) = ln 2; times 3 * 2^2
    assert losses['loss_distill_cls'].item() == pytest.approx(12 * math.log(2.0))
    with pytest.raises(ValueError, match=r"teacher's feature shapes \[\(1, 1, 1, 2\)\] "
                       r"are not the student's \[\(1, 1, 1, 1\)\]"):
        distiller.losses(student_feats[1:], student_cls, teacher_feats[:1], teacher_cls)
    off = Distiller('t.py', 't.pth', feature_weight=0.0)
    assert set(off.losses(student_feats, student_cls, student_feats, student_cls)) == {
        'loss_distill_cls'}


def test_bad_settings_name_the_value():
    with pytest.raises(ValueError, match=r"unknown keys \['teacher'\]"):
        build_distiller(dict(teacher='x'))
    with pytest.raises(ValueError, match='teacher_ckpt must be given'):
        build_distiller(dict(teacher_config='x.py'))
    with pytest.raises(ValueError, match='temperature must be a number > 0, got 0'):
        build_distiller(dict(teacher_config='x.py', teacher_ckpt='x.pth', temperature=0))
    assert build_distiller(None) is None


def samples(num):
    out = []
    for i in range(num):
        sample = DetDataSample(metainfo=dict(img_shape=(64, 64), pad_shape=(64, 64),
                                             ori_shape=(64, 64), scale_factor=(1.0, 1.0),
                                             batch_input_shape=(64, 64)))
        sample.gt_instances = InstanceData(bboxes=torch.tensor([[8.0, 8.0, 40.0, 40.0 + i]]),
                                           labels=torch.tensor([i % 3]))
        out.append(sample)
    return out


@pytest.fixture
def student_and_teacher(tmp_path):
    teacher_cfg = tiny_config('retinanet', 32)
    teacher = tiny_detector('retinanet', 32, seed=1, cfg=teacher_cfg)
    cfg_file, ckpt = tmp_path / 'teacher.py', tmp_path / 'teacher.pth'
    teacher_cfg.dump(str(cfg_file))
    torch.save({'state_dict': teacher.state_dict()}, ckpt)
    student_cfg = tiny_config('retinanet', 4)
    student_cfg.model.distill = dict(teacher_config=str(cfg_file), teacher_ckpt=str(ckpt),
                                     feature_weight=1.0, logit_weight=1.0)
    return tiny_detector('retinanet', 4, cfg=student_cfg), teacher


def test_the_teacher_is_frozen_and_outside_the_student(student_and_teacher):
    student, teacher = student_and_teacher
    keys = set(student.state_dict())
    params = len(list(student.parameters()))
    student.train()
    losses = student.loss(tiny_images(2), samples(2))
    assert {'loss_cls', 'loss_bbox', 'loss_distill_feat', 'loss_distill_cls'} <= set(losses)
    total = sum(v if torch.is_tensor(v) else sum(v) for v in losses.values())
    total.backward()
    loaded = student.distiller.teacher
    # the checkpoint's weights, frozen, in eval mode, without gradients
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(),
                                                 teacher.state_dict().values()))
    assert not loaded.training and all(p.grad is None and not p.requires_grad
                                       for p in loaded.parameters())
    assert student.backbone.conv1.weight.grad is not None
    # not a submodule: not saved, not trained, not put back in train mode
    assert set(student.state_dict()) == keys and len(list(student.parameters())) == params
    assert not any('teacher' in name for name, _ in student.named_modules())
    student.train()
    assert not loaded.training
    student.double()
    assert next(loaded.parameters()).dtype == torch.float64


def test_a_missing_teacher_checkpoint_fails_at_the_first_loss(tmp_path):
    cfg = tiny_config('retinanet', 4)
    cfg.model.distill = dict(teacher_config=str(tmp_path / 'none.py'), teacher_ckpt='none.pth')
    student = tiny_detector('retinanet', 4, cfg=cfg)  # testing a student needs no teacher
    with pytest.raises(FileNotFoundError, match=r"teacher_config '.*none.py' does not exist"):
        student.train().loss(tiny_images(2), samples(2))
