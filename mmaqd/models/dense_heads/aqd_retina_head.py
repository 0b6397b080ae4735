"""RetinaNet head in AQD form: shared tower convs, per-level BN."""
from typing import List, Optional, Tuple

import torch
from mmcv.cnn import build_conv_layer
from mmdet.models.dense_heads import RetinaHead
from mmdet.models.utils import multi_apply
from mmdet.registry import MODELS
from mmdet.utils import reduce_mean
from torch import Tensor

from mmaqd.models.layers.level_conv_module import conv_at_level

from .level_tower import (build_tower, check_num_levels, level_conv_cfg, level_norm_cfg,
                          resolve_num_levels, run_tower)


@MODELS.register_module()
class AQDRetinaHead(RetinaHead):
    """RetinaHead whose tower convs are shared across levels and whose norms are not.

    With ``norm_cfg=dict(type='MultiLevelBN')`` every pyramid level gets a private BN
    (AQD's multi-level BN); the level index is passed explicitly to the norm. A
    shared ``BN`` or ``GN`` norm is accepted too (ablations). Towers and predictors
    are built from ``conv_cfg`` (``QConv`` in quantized models). All losses,
    anchors, assigners and decoding are mmdet's RetinaHead's.

    One difference under DDP: RetinaHead divides each process's losses by that
    process's number of positive anchors; with ``global_avg_factor`` the divisor is
    the mean over the processes (as mmdet's FCOS and ATSS heads do), so ``k``
    processes with batch ``b`` train like one process with batch ``k*b``. Without a
    process group this changes nothing.

    Args:
        num_classes (int): Number of classes.
        in_channels (int): Channels of the input features.
        num_levels (int, optional): Number of pyramid levels. Defaults to the number
            of anchor-generator strides.
        global_avg_factor (bool): Average the loss normaliser over DDP processes.
            Defaults to True.
        **kwargs: Everything else RetinaHead takes (``stacked_convs``,
            ``feat_channels``, ``conv_cfg``, ``norm_cfg``, losses, ...).
    """

    def __init__(self,
                 num_classes: int,
                 in_channels: int,
                 num_levels: Optional[int] = None,
                 global_avg_factor: bool = True,
                 **kwargs) -> None:
        self.global_avg_factor = global_avg_factor
        strides = kwargs.get('anchor_generator', {}).get('strides', [8, 16, 32, 64, 128])
        self.num_levels = resolve_num_levels(num_levels, strides, type(self).__name__)
        kwargs['norm_cfg'] = level_norm_cfg(
            kwargs.get('norm_cfg'), self.num_levels, type(self).__name__)
        kwargs['conv_cfg'] = level_conv_cfg(
            kwargs.get('conv_cfg'), self.num_levels, type(self).__name__)
        super().__init__(num_classes=num_classes, in_channels=in_channels, **kwargs)

    def _init_layers(self) -> None:
        """Build the shared towers and RetinaHead's predictors."""
        self.cls_convs = build_tower(self.in_channels, self.feat_channels,
                                     self.stacked_convs, self.conv_cfg, self.norm_cfg)
        self.reg_convs = build_tower(self.in_channels, self.feat_channels,
                                     self.stacked_convs, self.conv_cfg, self.norm_cfg)
        # Predictors use the towers' conv type (QConv in quantized models).
        self.retina_cls = build_conv_layer(self.conv_cfg, self.feat_channels,
                                           self.num_base_priors * self.cls_out_channels, 3,
                                           padding=1)
        self.retina_reg = build_conv_layer(self.conv_cfg, self.feat_channels,
                                           self.num_base_priors * self.bbox_coder.encode_size,
                                           3, padding=1)

    def forward(self, x: Tuple[Tensor, ...]) -> Tuple[List[Tensor], List[Tensor]]:
        """Run the head on every pyramid level.

        Args:
            x (tuple[Tensor]): Features of each level, finest first.

        Returns:
            tuple: Classification scores and box deltas, one tensor per level.
        """
        x = check_num_levels(x, self.num_levels, type(self).__name__)
        return multi_apply(self.forward_single, x, list(range(len(x))))

    def forward_single(self, x: Tensor, level: int = 0) -> Tuple[Tensor, Tensor]:
        """Run the head on one level.

        Args:
            x (Tensor): Features of that level.
            level (int): Index of the level. Defaults to 0.

        Returns:
            tuple: Classification scores and box deltas of the level.
        """
        cls_feat = run_tower(self.cls_convs, x, level)
        reg_feat = run_tower(self.reg_convs, x, level)
        return (conv_at_level(self.retina_cls, cls_feat, level),
                conv_at_level(self.retina_reg, reg_feat, level))

    def raw_forward(self, x: Tuple[Tensor, ...]) -> Tuple[List[Tensor], List[Tensor]]:
        """Same as :meth:`forward` (RetinaNet's outputs need no transform)."""
        return self.forward(x)

    def finish_raw(self, outputs: Tuple[List[Tensor], ...]) -> Tuple[List[Tensor], ...]:
        """Identity: :meth:`raw_forward` already gives :meth:`forward`'s outputs."""
        return outputs

    def get_targets(self, *args, **kwargs) -> tuple:
        """mmdet's targets; the ``avg_factor`` (5th item) is averaged over processes.

        Under DDP this is a collective: every process must compute its targets.

        Args:
            *args, **kwargs: As for :meth:`AnchorHead.get_targets`.

        Returns:
            tuple: As :meth:`AnchorHead.get_targets`, with ``avg_factor`` the mean
            over DDP processes if ``global_avg_factor`` (a float then).
        """
        targets = super().get_targets(*args, **kwargs)
        if not self.global_avg_factor:
            return targets
        device = targets[0][0].device
        avg_factor = reduce_mean(torch.tensor(float(targets[4]), device=device)).item()
        return targets[:4] + (avg_factor, ) + targets[5:]
