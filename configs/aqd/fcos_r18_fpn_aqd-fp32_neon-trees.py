# Full-precision FCOS-R18 (AQD architecture) trained from scratch on the NEON
# tree-crown tiles, sized for a 2-core CPU (same budget as the RetinaNet one).
_base_ = [
    '../_base_/models/aqd_fcos_r18_fpn.py',
    '../_base_/datasets/neon_trees.py',
    '../_base_/schedules/cpu_iter.py',
]
max_iters = 800
model = dict(
    backbone=dict(init_cfg=None),
    neck=dict(out_channels=128),
    bbox_head=dict(
        num_classes=1,
        in_channels=128,
        feat_channels=128,
        # mmdet's improved FCOS settings, as in fcos_r18_fpn_aqd-fp32_synthetic.py.
        norm_on_bbox=True,
        centerness_on_reg=True,
        center_sampling=True,
        conv_bias=True,
        loss_bbox=dict(type='GIoULoss', loss_weight=1.0)))
train_cfg = dict(max_iters=max_iters)
optim_wrapper = dict(optimizer=dict(lr=0.01))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=100, end=max_iters,
         eta_min_ratio=0.01)
]
