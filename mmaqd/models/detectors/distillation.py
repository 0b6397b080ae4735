"""Distillation from the FP model a quantized fine-tune starts from."""
import os.path as osp
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.runner.checkpoint import load_checkpoint
from torch import nn

from mmdet.registry import MODELS


class Distiller:
    """A frozen teacher detector and the losses that pull a student towards it.

    The teacher is built from its own config and checkpoint when the first loss
    is computed (so that testing a student needs neither), kept in eval mode with
    no gradients, and held outside the student's modules: it is not a submodule,
    so it is neither trained nor saved in the student's checkpoint nor wrapped by
    DDP. Losses, each with its weight (0 turns it off):

    * ``loss_distill_feat``: the mean over pyramid levels of the mean squared
      difference between the student's and the teacher's neck features;
    * ``loss_distill_cls``: binary cross-entropy of the student's classification
      logits against the teacher's sigmoid probabilities at ``temperature`` (both
      logits divided by it), times ``temperature^2``, averaged over all elements.

    Args:
        teacher_config (str): Config file of the teacher (the FP model).
        teacher_ckpt (str): Its checkpoint.
        feature_weight (float): Weight of the feature loss. Defaults to 1.
        logit_weight (float): Weight of the logit loss. Defaults to 1.
        temperature (float): Temperature of the logit loss. Defaults to 1.
    """

    def __init__(self, teacher_config: str, teacher_ckpt: str, feature_weight: float = 1.0,
                 logit_weight: float = 1.0, temperature: float = 1.0) -> None:
        for name, value in (('feature_weight', feature_weight), ('logit_weight', logit_weight)):
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f'distill: {name} must be a number >= 0, got {value!r}')
        if not isinstance(temperature, (int, float)) or temperature <= 0:
            raise ValueError(f'distill: temperature must be a number > 0, got {temperature!r}')
        self.teacher_config = teacher_config
        self.teacher_ckpt = teacher_ckpt
        self.feature_weight = float(feature_weight)
        self.logit_weight = float(logit_weight)
        self.temperature = float(temperature)
        self.teacher: Optional[nn.Module] = None

    def build_teacher(self, like: torch.Tensor) -> nn.Module:
        """Build and load the teacher (once), on the device of ``like``.

        Raises:
            FileNotFoundError: If the config or the checkpoint does not exist.
        """
        if self.teacher is not None:
            return self.teacher
        for what, path in (('teacher_config', self.teacher_config),
                           ('teacher_ckpt', self.teacher_ckpt)):
            if not osp.isfile(path):
                raise FileNotFoundError(f'distill: {what} {path!r} does not exist')
        cfg = Config.fromfile(self.teacher_config)
        teacher = MODELS.build(cfg.model)
        load_checkpoint(teacher, self.teacher_ckpt, map_location='cpu', strict=True,
                        logger='silent')
        teacher.to(like.device).eval()
        for param in teacher.parameters():
            param.requires_grad_(False)
        self.teacher = teacher
        return teacher

    @torch.no_grad()
    def teacher_outputs(self, batch_inputs: torch.Tensor):
        """The teacher's neck features and head outputs for the batch."""
        teacher = self.build_teacher(batch_inputs)
        teacher.eval()
        feats = teacher.extract_feat(batch_inputs)
        return feats, teacher.bbox_head(feats)

    def losses(self, student_feats: Sequence[torch.Tensor], student_cls: Sequence[torch.Tensor],
               teacher_feats: Sequence[torch.Tensor],
               teacher_cls: Sequence[torch.Tensor]) -> Dict[str, torch.Tensor]:
        """The weighted distillation losses.

        Args:
            student_feats (sequence[Tensor]): The student's neck features per level.
            student_cls (sequence[Tensor]): Its classification logits per level.
            teacher_feats (sequence[Tensor]): The teacher's, same shapes.
            teacher_cls (sequence[Tensor]): The teacher's logits, same shapes.

        Returns:
            dict: ``loss_distill_feat`` and ``loss_distill_cls`` (those with weight > 0).

        Raises:
            ValueError: If the teacher's outputs do not have the student's shapes.
        """
        for kind, s_list, t_list in (('feature', student_feats, teacher_feats),
                                     ('logit', student_cls, teacher_cls)):
            s_shapes = [tuple(t.shape) for t in s_list]
            t_shapes = [tuple(t.shape) for t in t_list]
            if s_shapes != t_shapes:
                raise ValueError(f'distill: the teacher\'s {kind} shapes {t_shapes} are not the '
                                 f'student\'s {s_shapes}; the teacher must be the same '
                                 f'detector (its FP model)')
        losses = {}
        if self.feature_weight:
            per_level = [F.mse_loss(s, t) for s, t in zip(student_feats, teacher_feats)]
            losses['loss_distill_feat'] = self.feature_weight * torch.stack(per_level).mean()
        if self.logit_weight:
            temp = self.temperature
            per_level = [F.binary_cross_entropy_with_logits(s / temp, torch.sigmoid(t / temp))
                         for s, t in zip(student_cls, teacher_cls)]
            losses['loss_distill_cls'] = (self.logit_weight * temp**2 *
                                          torch.stack(per_level).mean())
        return losses


def build_distiller(distill: Optional[dict]) -> Optional[Distiller]:
    """A :class:`Distiller` from a detector's ``distill`` config dict (None: none).

    Raises:
        ValueError: For unknown keys or a missing teacher.
    """
    if distill is None:
        return None
    allowed: List[str] = ['teacher_config', 'teacher_ckpt', 'feature_weight', 'logit_weight',
                          'temperature']
    unknown = sorted(set(distill) - set(allowed))
    if unknown:
        raise ValueError(f'distill: unknown keys {unknown}; expected {allowed}')
    missing = [k for k in ('teacher_config', 'teacher_ckpt') if not distill.get(k)]
    if missing:
        raise ValueError(f'distill: {" and ".join(missing)} must be given')
    return Distiller(**distill)
