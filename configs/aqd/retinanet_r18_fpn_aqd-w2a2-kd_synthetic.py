# AQD 2-bit RetinaNet-R18 on the generated digits set, distilled from the FP model the
# fine-tune starts from (the teacher: its config and load_from checkpoint; frozen, not
# saved with the student): per-level FPN feature MSE and a sigmoid logit loss. A
# different start model needs both load_from and model.distill.teacher_ckpt.
_base_ = './retinanet_r18_fpn_aqd-w2a2_synthetic.py'

model = dict(
    distill=dict(
        teacher_config='configs/aqd/retinanet_r18_fpn_aqd-fp32_synthetic.py',
        teacher_ckpt=_base_.load_from,
        feature_weight=1.0,
        logit_weight=1.0))
