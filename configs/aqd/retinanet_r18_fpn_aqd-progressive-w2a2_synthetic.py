# AQD 2-bit RetinaNet-R18 on the generated digits set by progressive quantization:
# from the FP checkpoint, every conv except the 8-bit stem and predictors goes
# 8 -> 4 -> 3 -> 2 bits within the same 300 iterations as the direct 2-bit config
# (retinanet_r18_fpn_aqd-w2a2_synthetic.py), half of them at 2 bits. On each change the
# LSQ steps keep their clipping range and the steps' momentum is reset. Quantizers
# initialise from the first batch as in the direct config, so that the schedule is the
# only difference (add QuantCalibrationHook to calibrate them from several batches).
_base_ = './retinanet_r18_fpn_aqd-w2a2_synthetic.py'

custom_hooks = [
    dict(
        type='BitWidthScheduleHook',
        schedule=[
            dict(begin=0, bits=8),
            dict(begin=50, bits=4),
            dict(begin=100, bits=3),
            dict(begin=150, bits=2),
        ],
        exclude=[_base_.stem_pattern, _base_.retinanet_predictor_pattern]),
    dict(type='QuantNaNGuardHook'),  # from the CPU schedule: lists replace, not merge
    _base_.integer_aware_hook,
]
