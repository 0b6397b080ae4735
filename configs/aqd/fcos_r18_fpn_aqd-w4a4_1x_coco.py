# AQD 4-bit FCOS-R18, COCO 1x: fine-tuned from the FP checkpoint of
# fcos_r18_fpn_aqd-fp32_1x_coco.py at lr 0.001. Every conv is quantized; the stem's
# weights and the final predictors stay at 8 bits; the stem's input is the integer image.
_base_ = ['./fcos_r18_fpn_aqd-fp32_1x_coco.py', '../_base_/quantization/aqd_w4a4.py']

model = dict(
    type='AQDFCOS',
    quant_cfg=_base_.fcos_quant_cfg,
    backbone=_base_.quant_backbone,
    neck=_base_.quant_neck,
    bbox_head=_base_.quant_head)
custom_hooks = [_base_.integer_aware_hook]
load_from = 'work_dirs/fcos_r18_fpn_aqd-fp32_1x_coco/epoch_12.pth'
optim_wrapper = dict(optimizer=dict(lr=0.001))
