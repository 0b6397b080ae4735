"""FCOS head in AQD form: shared tower convs, per-level BN."""
from typing import List, Optional, Tuple

from mmcv.cnn import Scale, build_conv_layer
from mmdet.models.dense_heads import FCOSHead
from mmdet.models.utils import multi_apply
from mmdet.registry import MODELS
from torch import Tensor

from mmaqd.models.layers.level_conv_module import conv_at_level

from .level_tower import (build_tower, check_num_levels, level_conv_cfg, level_norm_cfg,
                          resolve_num_levels, run_tower)


@MODELS.register_module()
class AQDFCOSHead(FCOSHead):
    """FCOSHead whose tower convs are shared across levels and whose norms are not.

    With ``norm_cfg=dict(type='MultiLevelBN')`` every pyramid level gets a private BN
    (AQD's multi-level BN); the level index is passed explicitly. FCOS keeps its
    per-level :class:`Scale` and its centerness branch; all losses, targets and
    decoding are mmdet's FCOSHead's.

    Args:
        num_classes (int): Number of classes.
        in_channels (int): Channels of the input features.
        num_levels (int, optional): Number of pyramid levels. Defaults to the number
            of strides.
        **kwargs: Everything else FCOSHead takes.
    """

    def __init__(self,
                 num_classes: int,
                 in_channels: int,
                 num_levels: Optional[int] = None,
                 **kwargs) -> None:
        strides = kwargs.get('strides', (4, 8, 16, 32, 64))
        self.num_levels = resolve_num_levels(num_levels, strides, type(self).__name__)
        if kwargs.get('dcn_on_last_conv'):
            raise ValueError('AQDFCOSHead: dcn_on_last_conv is not supported')
        kwargs['norm_cfg'] = level_norm_cfg(
            kwargs.get('norm_cfg'), self.num_levels, type(self).__name__)
        kwargs['conv_cfg'] = level_conv_cfg(
            kwargs.get('conv_cfg'), self.num_levels, type(self).__name__)
        super().__init__(num_classes=num_classes, in_channels=in_channels, **kwargs)

    def _init_cls_convs(self) -> None:
        self.cls_convs = build_tower(self.in_channels, self.feat_channels,
                                     self.stacked_convs, self.conv_cfg, self.norm_cfg,
                                     self.conv_bias)

    def _init_reg_convs(self) -> None:
        self.reg_convs = build_tower(self.in_channels, self.feat_channels,
                                     self.stacked_convs, self.conv_cfg, self.norm_cfg,
                                     self.conv_bias)

    def _init_predictor(self) -> None:
        # Predictors use the towers' conv type (QConv in quantized models).
        self.conv_cls = build_conv_layer(self.conv_cfg, self.feat_channels,
                                         self.cls_out_channels, 3, padding=1)
        self.conv_reg = build_conv_layer(self.conv_cfg, self.feat_channels, 4, 3, padding=1)

    def _init_layers(self) -> None:
        super()._init_layers()
        self.conv_centerness = build_conv_layer(self.conv_cfg, self.feat_channels, 1, 3,
                                                padding=1)

    def forward(self, x: Tuple[Tensor, ...]) -> Tuple[List[Tensor], List[Tensor], List[Tensor]]:
        """Run the head on every pyramid level.

        Args:
            x (tuple[Tensor]): Features of each level, finest first.

        Returns:
            tuple: Classification scores, box distances and centerness, one tensor
            per level.
        """
        x = check_num_levels(x, self.num_levels, type(self).__name__)
        return multi_apply(self.forward_single, x, self.scales, self.strides,
                           list(range(len(x))))

    def forward_single(self, x: Tensor, scale: Scale, stride: int,
                       level: int = 0) -> Tuple[Tensor, Tensor, Tensor]:
        """Run the head on one level (FCOSHead.forward_single with explicit level).

        Args:
            x (Tensor): Features of that level.
            scale (Scale): The level's learnable box scale.
            stride (int): The level's stride.
            level (int): Index of the level. Defaults to 0.

        Returns:
            tuple: Classification scores, box distances and centerness of the level.
        """
        cls_score, bbox_pred, centerness = self.raw_single(x, scale, level)
        return cls_score, self.finish_bbox_pred(bbox_pred, stride), centerness

    def raw_single(self, x: Tensor, scale: Scale, level: int) -> Tuple[Tensor, Tensor, Tensor]:
        """The level's conv outputs, box distances times the level's Scale only.

        These are what the integer engine computes (as integers times their units).

        Args:
            x (Tensor): Features of that level.
            scale (Scale): The level's learnable box scale.
            level (int): Index of the level.

        Returns:
            tuple: Classification logits, scaled box outputs, centerness logits.
        """
        cls_feat = run_tower(self.cls_convs, x, level)
        reg_feat = run_tower(self.reg_convs, x, level)
        cls_score = conv_at_level(self.conv_cls, cls_feat, level)
        centerness = conv_at_level(self.conv_centerness,
                                   reg_feat if self.centerness_on_reg else cls_feat, level)
        bbox_pred = scale(conv_at_level(self.conv_reg, reg_feat, level)).float()
        return cls_score, bbox_pred, centerness

    def finish_bbox_pred(self, bbox_pred: Tensor, stride: int) -> Tensor:
        """FCOS's box transform: ReLU (and stride in eval) with norm_on_bbox, else exp.

        Args:
            bbox_pred (Tensor): Scaled box outputs of one level.
            stride (int): The level's stride.

        Returns:
            Tensor: Box distances as FCOSHead.forward returns them.
        """
        if self.norm_on_bbox:
            bbox_pred = bbox_pred.clamp(min=0)
            if not self.training:
                bbox_pred = bbox_pred * stride
            return bbox_pred
        return bbox_pred.exp()

    def raw_forward(self, x: Tuple[Tensor, ...]) -> Tuple[List[Tensor], ...]:
        """:meth:`raw_single` on every level (the integer engine's outputs, in real units)."""
        x = check_num_levels(x, self.num_levels, type(self).__name__)
        return multi_apply(self.raw_single, x, self.scales, list(range(len(x))))

    def finish_raw(self, outputs: Tuple[List[Tensor], ...]) -> Tuple[List[Tensor], ...]:
        """Turn :meth:`raw_forward`'s outputs into :meth:`forward`'s."""
        cls_scores, bbox_preds, centernesses = outputs
        return cls_scores, [self.finish_bbox_pred(b, s) for b, s in
                            zip(bbox_preds, self.strides)], centernesses
