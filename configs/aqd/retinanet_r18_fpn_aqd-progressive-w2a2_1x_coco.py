# AQD 2-bit RetinaNet-R18, COCO 1x, by progressive quantization: from the FP
# checkpoint, every conv except the 8-bit stem and predictors runs at 8 bits for
# epochs 1-3, 4 bits for 4-6, 3 bits for 7-9 and 2 bits for 10-12.
_base_ = './retinanet_r18_fpn_aqd-w2a2_1x_coco.py'

custom_hooks = [
    dict(
        type='BitWidthScheduleHook',
        by_epoch=True,
        schedule=[
            dict(begin=0, bits=8),
            dict(begin=3, bits=4),
            dict(begin=6, bits=3),
            dict(begin=9, bits=2),
        ],
        exclude=[_base_.stem_pattern, _base_.retinanet_predictor_pattern]),
    dict(type='QuantCalibrationHook', num_batches=16),
    _base_.integer_aware_hook,
]
