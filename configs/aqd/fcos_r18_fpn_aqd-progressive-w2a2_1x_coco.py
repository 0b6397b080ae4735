# AQD 2-bit FCOS-R18, COCO 1x, by progressive quantization (8 -> 4 -> 3 -> 2 bits,
# three epochs each); see retinanet_r18_fpn_aqd-progressive-w2a2_1x_coco.py.
_base_ = './fcos_r18_fpn_aqd-w2a2_1x_coco.py'

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
        exclude=[_base_.stem_pattern, _base_.fcos_predictor_pattern]),
    dict(type='QuantCalibrationHook', num_batches=16),
    _base_.integer_aware_hook,
]
