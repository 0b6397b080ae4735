# Full-precision FCOS-R18 (AQD architecture) trained from scratch on the generated
# digits set, sized for a 2-core CPU (same budget and optimizer as the RetinaNet one).
_base_ = [
    '../_base_/models/aqd_fcos_r18_fpn.py',
    '../_base_/datasets/synthetic_digits.py',
    '../_base_/schedules/cpu_iter.py',
]
max_iters = 500
model = dict(
    backbone=dict(init_cfg=None),
    neck=dict(out_channels=128),
    bbox_head=dict(
        num_classes=10,
        in_channels=128,
        feat_channels=128,
        stacked_convs=2,
        # mmdet's improved FCOS settings (fcos_..._center-normbbox-centeronreg-giou):
        # measured without them, 500 iterations reached val bbox mAP only 0.187.
        norm_on_bbox=True,
        centerness_on_reg=True,
        center_sampling=True,
        conv_bias=True,
        loss_bbox=dict(type='GIoULoss', loss_weight=1.0)))
train_cfg = dict(max_iters=max_iters)
optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=0.001, weight_decay=0.05))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=50, end=max_iters,
         eta_min_ratio=0.01)
]
