_base_ = './retinanet_r18_fpn_aqd-fp32_1x_coco.py'
model = dict(
    backbone=dict(
        depth=50, init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50')),
    neck=dict(in_channels=[256, 512, 1024, 2048]))
