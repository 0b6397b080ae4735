# Iteration-based training for the CPU-sized configs (2 cores, from scratch).
# Children set the budget: ``train_cfg = dict(max_iters=N)`` and a scheduler ending at
# N. Validation runs once, after the last iteration (mmengine always validates then).
# mmdet's default runtime is included here so that its hooks can be adjusted.
_base_ = 'mmdet::_base_/default_runtime.py'

train_cfg = dict(type='IterBasedTrainLoop', max_iters=1000, val_interval=10**9)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=0.0001),
    paramwise_cfg=dict(norm_decay_mult=0.),
    clip_grad=dict(max_norm=35, norm_type=2))
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=20),
    # AtomicCheckpointHook: a kill while saving never leaves the run without a checkpoint
    checkpoint=dict(type='AtomicCheckpointHook', by_epoch=False, interval=500,
                    max_keep_ckpts=1))
log_processor = dict(by_epoch=False)
# Stop at the first NaN / Inf in a quantizer's input, a layer's output or a loss, naming
# the module (FP models too). Configs that set their own custom_hooks list must repeat it: mmengine
# replaces lists when merging configs.
custom_hooks = [dict(type='QuantNaNGuardHook')]
