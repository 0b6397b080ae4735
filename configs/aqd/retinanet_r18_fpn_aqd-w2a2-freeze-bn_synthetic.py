# Ablation: retinanet_r18_fpn_aqd-w2a2_synthetic.py with the BN running statistics
# frozen for the last quarter of the fine-tune (FreezeBNStatsHook).
_base_ = './retinanet_r18_fpn_aqd-w2a2_synthetic.py'

custom_hooks = [
    dict(type='FreezeBNStatsHook', begin=225),
    dict(type='QuantNaNGuardHook'),  # from the CPU schedule: lists replace, not merge
    _base_.integer_aware_hook,
]
