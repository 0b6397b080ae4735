_base_ = './retinanet_r18_fpn_aqd-w4a4_1x_coco.py'
model = dict(
    backbone=dict(depth=50),
    neck=dict(in_channels=[256, 512, 1024, 2048]))
load_from = 'work_dirs/retinanet_r50_fpn_aqd-fp32_1x_coco/epoch_12.pth'
