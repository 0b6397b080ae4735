# AQD 4-bit FCOS-R18 on the generated digits set, fine-tuned on 2 CPU cores
# from the FP checkpoint of fcos_r18_fpn_aqd-fp32_synthetic.py (train that first). The
# quantization settings are configs/_base_/quantization/aqd_w4a4.py. The fine-tune keeps
# the FP run's AdamW lr (1e-3): AQD fine-tunes at a tenth of its FP lr, but for a whole
# 1x schedule; in 300 iterations that lr left 2-bit FCOS at 0.458 against FP 0.644,
# where 1e-3 reached 0.630 (the converging study, README).
_base_ = ['./fcos_r18_fpn_aqd-fp32_synthetic.py', '../_base_/quantization/aqd_w4a4.py']

max_iters = 300
model = dict(
    type='AQDFCOS',
    quant_cfg=_base_.fcos_quant_cfg,
    backbone=_base_.quant_backbone,
    neck=_base_.quant_neck,
    bbox_head=_base_.quant_head)
# the CPU schedule's NaN guard, repeated: lists replace, not merge
custom_hooks = [dict(type='QuantNaNGuardHook'), _base_.integer_aware_hook]
load_from = 'work_dirs/fcos_r18_fpn_aqd-fp32_synthetic/iter_500.pth'
train_cfg = dict(max_iters=max_iters)
optim_wrapper = dict(optimizer=dict(lr=0.001))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=20),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=20, end=max_iters,
         eta_min_ratio=0.01)
]
