# AQD 2-bit FCOS-R18 on the generated digits set by progressive quantization
# (8 -> 4 -> 3 -> 2 bits), same budget as fcos_r18_fpn_aqd-w2a2_synthetic.py; see
# retinanet_r18_fpn_aqd-progressive-w2a2_synthetic.py.
_base_ = './fcos_r18_fpn_aqd-w2a2_synthetic.py'

custom_hooks = [
    dict(
        type='BitWidthScheduleHook',
        schedule=[
            dict(begin=0, bits=8),
            dict(begin=50, bits=4),
            dict(begin=100, bits=3),
            dict(begin=150, bits=2),
        ],
        exclude=[_base_.stem_pattern, _base_.fcos_predictor_pattern]),
    dict(type='QuantNaNGuardHook'),  # from the CPU schedule: lists replace, not merge
    _base_.integer_aware_hook,
]
