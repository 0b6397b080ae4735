_base_ = './fcos_r18_fpn_aqd-fp32_1x_coco.py'
model = dict(
    backbone=dict(
        depth=34, init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet34')))
