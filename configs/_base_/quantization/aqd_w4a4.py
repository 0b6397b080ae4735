# AQD's quantization of a detector, written once for every quantized config: LSQ on
# the weights and inputs of every conv (backbone, FPN, heads) at 4 bits; the stem's
# weights and the final predictors keep 8 bits (the stem's input is the integer
# image); BNs of the backbone and FPN as QBN. A quantized config lists this file in
# its _base_ next to its FP config and sets
#     model = dict(type=..., quant_cfg=_base_.retinanet_quant_cfg (or fcos_quant_cfg),
#                  backbone=_base_.quant_backbone, neck=_base_.quant_neck,
#                  bbox_head=_base_.quant_head)
# Lower widths inherit a 4-bit config and change quant_cfg's w_bits / a_bits.
# Training is integer-aware (IntegerAwareQATHook): the fake-quant model computes the
# integer engine's arithmetic, so that its mAP is the integer model's. A config sets
#     custom_hooks = [..., _base_.integer_aware_hook]
stem_pattern = r'^backbone\.conv1$'
retinanet_predictor_pattern = r'^bbox_head\.retina_(cls|reg)$'
fcos_predictor_pattern = r'^bbox_head\.conv_(cls|reg|centerness)$'

retinanet_quant_cfg = dict(
    w_bits=4,
    a_bits=4,
    quantizer='LSQ',
    scope='all',
    overrides=[
        dict(pattern=stem_pattern, w_bits=8),
        dict(pattern=retinanet_predictor_pattern, w_bits=8, a_bits=8),
    ])
fcos_quant_cfg = dict(
    retinanet_quant_cfg,
    overrides=[
        dict(pattern=stem_pattern, w_bits=8),
        dict(pattern=fcos_predictor_pattern, w_bits=8, a_bits=8),
    ])
quant_backbone = dict(
    type='QResNet', norm_cfg=dict(type='QBN', requires_grad=True), init_cfg=None)
quant_neck = dict(type='QFPN', norm_cfg=dict(type='QBN', requires_grad=True))
quant_head = dict(conv_cfg=dict(type='QConv'))
integer_aware_hook = dict(type='IntegerAwareQATHook')
