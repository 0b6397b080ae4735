_base_ = './retinanet_r18_fpn_aqd-w4a4_synthetic.py'
model = dict(quant_cfg=dict(w_bits=3, a_bits=3))
