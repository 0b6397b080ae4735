"""Register mmaqd's plain-PyTorch layers in mmdet's MODELS registry for configs.

With these, configs can write ``conv_cfg=dict(type='QConv', w_bits=4, a_bits=4)``
and ``norm_cfg=dict(type='QBN')`` wherever mmcv's ``build_conv_layer`` /
``build_norm_layer`` are used (ConvModule, ResNet, FPN, heads).
"""
from mmdet.registry import MODELS

from mmaqd.quant import (QBN, MultiLevelBN, QAdd, QConv, SharedLevelBN, SyncMultiLevelBN,
                         SyncQBN)

for _module in (QConv, QBN, SyncQBN, QAdd, MultiLevelBN, SharedLevelBN, SyncMultiLevelBN):
    MODELS.register_module(_module.__name__, module=_module)
