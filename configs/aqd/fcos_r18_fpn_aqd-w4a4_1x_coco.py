# AQD 4-bit FCOS-R18, COCO 1x: fine-tuned from the FP checkpoint of
# fcos_r18_fpn_aqd-fp32_1x_coco.py at lr 0.001. Every conv is quantized; the stem's
# weights and the final predictors stay at 8 bits; the stem's input is the integer image.
_base_ = './fcos_r18_fpn_aqd-fp32_1x_coco.py'

model = dict(
    type='AQDFCOS',
    quant_cfg=dict(
        w_bits=4,
        a_bits=4,
        quantizer='LSQ',
        scope='all',
        overrides=[
            dict(pattern=r'^backbone\.conv1$', w_bits=8),
            dict(pattern=r'^bbox_head\.conv_(cls|reg|centerness)$', w_bits=8, a_bits=8),
        ]),
    backbone=dict(type='QResNet', norm_cfg=dict(type='QBN', requires_grad=True),
                  init_cfg=None),
    neck=dict(type='QFPN', norm_cfg=dict(type='QBN', requires_grad=True)),
    bbox_head=dict(conv_cfg=dict(type='QConv')))
load_from = 'work_dirs/fcos_r18_fpn_aqd-fp32_1x_coco/epoch_12.pth'
optim_wrapper = dict(optimizer=dict(lr=0.001))
