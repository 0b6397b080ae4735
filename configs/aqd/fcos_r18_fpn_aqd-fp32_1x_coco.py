# Full-precision FCOS-R18 with AQD's architecture, COCO 1x (schedule and optimizer
# settings of mmdet::fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py).
_base_ = [
    '../_base_/models/aqd_fcos_r18_fpn.py',
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
# crash-safe saving (mmengine's CheckpointHook deletes the old checkpoint first)
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
# CocoDataset that names the annotation file when no image (with a box) is left
train_dataloader = dict(dataset=dict(type='CheckedCocoDataset'))
val_dataloader = dict(dataset=dict(type='CheckedCocoDataset'))
test_dataloader = dict(dataset=dict(type='CheckedCocoDataset'))
param_scheduler = [
    dict(type='ConstantLR', factor=1.0 / 3, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1)
]
optim_wrapper = dict(
    optimizer=dict(lr=0.01),
    paramwise_cfg=dict(bias_lr_mult=2., bias_decay_mult=0.),
    clip_grad=dict(max_norm=35, norm_type=2))
