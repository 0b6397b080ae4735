# RetinaNet-R18 with AQD's full-precision architecture:
# - integer image: integer mean, std 1 (the quantized model's input needs no quantizer);
# - conv -> BN -> ReLU on every FPN conv (lateral, output, extra), so every
#   quantized activation is non-negative;
# - head towers shared across pyramid levels with one private BN per level
#   (multi-level BN) instead of GN.
_base_ = 'mmdet::_base_/models/retinanet_r50_fpn.py'

custom_imports = dict(imports=['mmaqd'], allow_failed_imports=False)

model = dict(
    # mmdet's RetinaNet plus checkpoint checks (and quant_cfg, unused at full precision)
    type='AQDRetinaNet',
    data_preprocessor=dict(mean=[124, 116, 104], std=[1, 1, 1], bgr_to_rgb=True),
    backbone=dict(
        depth=18,
        # The std-1 input is 58x larger than what the torchvision weights saw; BN in
        # training mode removes that scale, so BN is trained and no stage is frozen.
        frozen_stages=-1,
        norm_eval=False,
        init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet18')),
    neck=dict(
        in_channels=[64, 128, 256, 512],
        norm_cfg=dict(type='BN', requires_grad=True),
        act_cfg=dict(type='ReLU')),
    bbox_head=dict(
        type='AQDRetinaHead',
        norm_cfg=dict(type='MultiLevelBN')))
