# AQD 4-bit RetinaNet-R18 for multi-process training (tools/dist_train.sh CONFIG N):
# every BN synchronised across processes, per pyramid level in the head, so that N
# processes with batch b train like one with batch N*b. Works with gloo on CPU
# (torch's and mmcv's SyncBN need CUDA). Without a process group its norms are those of
# retinanet_r18_fpn_aqd-w4a4_synthetic.py (checkpoints are interchangeable), but a single
# process trains with half that config's batch: batch_size is per process.
_base_ = './retinanet_r18_fpn_aqd-w4a4_synthetic.py'

model = dict(
    backbone=dict(norm_cfg=dict(type='SyncQBN', requires_grad=True)),
    neck=dict(norm_cfg=dict(type='SyncQBN', requires_grad=True)),
    bbox_head=dict(norm_cfg=dict(type='SyncMultiLevelBN')))
# 2 processes x 4 images: the global batch of the single-process config
train_dataloader = dict(batch_size=4)
