_base_ = './fcos_r18_fpn_aqd-w4a4_1x_coco.py'
model = dict(quant_cfg=dict(w_bits=2, a_bits=2))
