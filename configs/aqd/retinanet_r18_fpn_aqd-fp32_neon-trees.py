# Full-precision RetinaNet-R18 (AQD architecture) trained from scratch on the NEON
# tree-crown tiles, sized for a 2-core CPU (settings measured in docs/datasets.md:
# 400 px tiles at their size, anchors from 16 px, FPN/head width 128).
_base_ = [
    '../_base_/models/aqd_retinanet_r18_fpn.py',
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
        anchor_generator=dict(octave_base_scale=2)))
train_cfg = dict(max_iters=max_iters)
optim_wrapper = dict(optimizer=dict(lr=0.01))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=100, end=max_iters,
         eta_min_ratio=0.01)
]
