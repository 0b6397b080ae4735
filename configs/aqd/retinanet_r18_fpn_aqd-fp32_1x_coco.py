# Full-precision RetinaNet-R18 with AQD's architecture, COCO 1x: stage 1 of the AQD
# recipe; the quantized configs fine-tune from its checkpoint.
_base_ = [
    '../_base_/models/aqd_retinanet_r18_fpn.py',
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
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001))
