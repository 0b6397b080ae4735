# FCOS-R18 with AQD's full-precision architecture (see aqd_retinanet_r18_fpn.py):
# integer image, conv -> BN -> ReLU on every FPN conv, multi-level BN head towers.
# mmdet keeps its FCOS model settings inside full configs (no model-only base), so
# the model is written out here with the values of
# mmdet::fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py; what differs is marked "AQD".
custom_imports = dict(imports=['mmaqd'], allow_failed_imports=False)

model = dict(
    type='AQDFCOS',  # mmdet's FCOS plus checkpoint checks (and quant_cfg)
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[124, 116, 104],  # AQD: integer mean, std 1
        std=[1, 1, 1],
        bgr_to_rgb=True,
        pad_size_divisor=32),
    backbone=dict(
        type='ResNet',
        depth=18,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,  # AQD: BN trained (absorbs the std-1 input scale)
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,
        style='pytorch',
        init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet18')),
    neck=dict(
        type='FPN',
        in_channels=[64, 128, 256, 512],
        out_channels=256,
        start_level=1,
        add_extra_convs='on_output',  # P6 from P5
        num_outs=5,
        relu_before_extra_convs=True,
        norm_cfg=dict(type='BN', requires_grad=True),  # AQD: conv -> BN -> ReLU
        act_cfg=dict(type='ReLU')),
    bbox_head=dict(
        type='AQDFCOSHead',  # AQD: shared convs, multi-level BN instead of GN
        num_classes=80,
        in_channels=256,
        stacked_convs=4,
        feat_channels=256,
        strides=[8, 16, 32, 64, 128],
        norm_cfg=dict(type='MultiLevelBN'),
        loss_cls=dict(
            type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
        loss_bbox=dict(type='IoULoss', loss_weight=1.0),
        loss_centerness=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0)),
    test_cfg=dict(
        nms_pre=1000,
        min_bbox_size=0,
        score_thr=0.05,
        nms=dict(type='nms', iou_threshold=0.5),
        max_per_img=100))
