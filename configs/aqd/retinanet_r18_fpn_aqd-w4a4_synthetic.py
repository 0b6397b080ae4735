# AQD 4-bit RetinaNet-R18 on the generated digits set, fine-tuned on 2 CPU cores
# from the FP checkpoint of retinanet_r18_fpn_aqd-fp32_synthetic.py (train that first). The
# quantization settings are those of the COCO config; the optimizer's lr is 10x lower
# than the FP run's, as in the AQD recipe.
_base_ = './retinanet_r18_fpn_aqd-fp32_synthetic.py'

max_iters = 300
model = dict(
    type='AQDRetinaNet',
    quant_cfg=dict(
        w_bits=4,
        a_bits=4,
        quantizer='LSQ',
        scope='all',
        overrides=[
            dict(pattern=r'^backbone\.conv1$', w_bits=8),
            dict(pattern=r'^bbox_head\.retina_(cls|reg)$', w_bits=8, a_bits=8),
        ]),
    backbone=dict(type='QResNet', norm_cfg=dict(type='QBN', requires_grad=True),
                  init_cfg=None),
    neck=dict(type='QFPN', norm_cfg=dict(type='QBN', requires_grad=True)),
    bbox_head=dict(conv_cfg=dict(type='QConv')))
load_from = 'work_dirs/retinanet_r18_fpn_aqd-fp32_synthetic/iter_500.pth'
train_cfg = dict(max_iters=max_iters)
optim_wrapper = dict(optimizer=dict(lr=0.0001))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=20),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=20, end=max_iters,
         eta_min_ratio=0.01)
]
