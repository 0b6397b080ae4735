"""AQD detectors: 32-bit equivalence with the FP detector, bits by name, checkpoint keys."""
import os.path as osp

import re

import pytest
import torch
from mmengine.config import Config
from mmengine.runner.checkpoint import load_state_dict

import mmaqd  # noqa: F401
from mmaqd.quant import QConv
from mmdet.registry import MODELS
from mmdet.utils import register_all_modules
from tests.conftest import ROOT
from tests.test_integer.tiny_detectors import tiny_config, tiny_detector

register_all_modules()
PAIRS = [
    ('retinanet_r18_fpn_aqd-fp32_synthetic.py', 'retinanet_r18_fpn_aqd-w4a4_synthetic.py',
     r'^bbox_head\.retina_(cls|reg)$'),
    ('fcos_r18_fpn_aqd-fp32_synthetic.py', 'fcos_r18_fpn_aqd-w4a4_synthetic.py',
     r'^bbox_head\.conv_(cls|reg|centerness)$'),
]


def build(name, **quant_cfg):
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'aqd', name))
    if quant_cfg:
        cfg.model.quant_cfg = quant_cfg
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model


def images():
    g = torch.Generator().manual_seed(0)
    return torch.randint(-120, 130, (2, 3, 64, 64), generator=g).float()


@pytest.mark.parametrize('fp_name, q_name, _', PAIRS)
def test_32_bit_quantized_detector_reproduces_the_fp_detector(fp_name, q_name, _):
    fp = build(fp_name)
    q = build(q_name, w_bits=32, a_bits=32)
    load_state_dict(q, fp.state_dict(), strict=True)  # only quantizer keys missing
    x = images()
    for mode in ('train', 'eval'):
        getattr(fp, mode)()
        getattr(q, mode)()
        with torch.no_grad():
            outs_fp, outs_q = fp._forward(x), q._forward(x)
        for level_fp, level_q in zip(outs_fp, outs_q):
            for a, b in zip(level_fp, level_q):
                assert torch.equal(a, b), mode


@pytest.mark.parametrize('fp_name, q_name, predictors', PAIRS)
def test_4_bit_config_quantizes_everything_with_8_bit_ends(fp_name, q_name, predictors):
    import re
    q = build(q_name)
    convs = {n: m for n, m in q.named_modules() if isinstance(m, torch.nn.Conv2d)}
    assert all(isinstance(m, QConv) for m in convs.values())
    for name, conv in convs.items():
        if name == 'backbone.conv1':
            assert (conv.w_bits, conv.a_bits) == (8, None)
        elif re.search(predictors, name):
            assert (conv.w_bits, conv.a_bits) == (8, 8)
        else:
            assert (conv.w_bits, conv.a_bits) == (4, 4), name
    q.train()
    outs = q._forward(images())
    assert all(torch.isfinite(t).all() for level in outs for t in level)


def test_checkpoint_of_another_architecture_is_refused_by_name():
    q = build('retinanet_r18_fpn_aqd-w4a4_synthetic.py')
    state = build('retinanet_r18_fpn_aqd-fp32_synthetic.py').state_dict()
    state['neck.extra_thing.weight'] = torch.zeros(1)
    with pytest.raises(ValueError, match=r'Missing none\. Unexpected 1: neck\.extra_thing\.weight'):
        load_state_dict(q, state)
    state.pop('neck.extra_thing.weight')
    state.pop('backbone.layer1.0.conv1.weight')
    with pytest.raises(ValueError, match=r'Missing 1: backbone\.layer1\.0\.conv1\.weight\.'):
        load_state_dict(q, state)
    # a 10-class head for 80 classes: the size mismatch is named, not just logged
    state = build('retinanet_r18_fpn_aqd-fp32_synthetic.py').state_dict()
    state['bbox_head.retina_cls.weight'] = torch.zeros(720, 128, 3, 3)
    state['bbox_head.retina_cls.bias'] = torch.zeros(720)
    with pytest.raises(ValueError, match=re.escape(
            'Size mismatches 2: bbox_head.retina_cls.weight (checkpoint (720, 128, 3, 3), '
            'model (90, 128, 3, 3)), bbox_head.retina_cls.bias (checkpoint (720,), model '
            '(90,)). Missing none.')):
        load_state_dict(q, state)
    # the FP config's model checks too
    fp = build('retinanet_r18_fpn_aqd-fp32_synthetic.py')
    with pytest.raises(ValueError, match=r'Size mismatches 2: bbox_head\.retina_cls\.weight'):
        load_state_dict(fp, state)


def test_scales_saved_at_other_bits_are_refused_by_name():
    state = tiny_detector('retinanet', 4).state_dict()
    assert state['backbone.layer1.0.conv1._extra_state'].tolist() == [4, 4]
    same = MODELS.build(tiny_config('retinanet', 4).model)
    same.load_state_dict(state)  # same bits: fine
    other = MODELS.build(tiny_config('retinanet', 2).model)
    with pytest.raises(ValueError, match=r'backbone\.layer1\.0\.conv1 saved at w4/a4, now w2/a2'):
        other.load_state_dict(state)
    # checkpoints of session 2 saved the bits as a dict; they are still read
    for key in [k for k in state if k.endswith('._extra_state')]:
        w_bits, a_bits = state[key].tolist()
        state[key] = dict(w_bits=w_bits, a_bits=a_bits or None)
    same.load_state_dict(state)
    with pytest.raises(ValueError, match=r'backbone\.layer1\.0\.conv1 saved at w4/a4, now w2/a2'):
        other.load_state_dict(state)


def test_layers_saved_unquantized_load_into_quantized_ones():
    cfg = tiny_config('retinanet', 4)
    cfg.model.quant_cfg.scope = 'backbone'
    cfg.model.quant_cfg.overrides = cfg.model.quant_cfg.overrides[:1]
    state = tiny_detector('retinanet', 4, cfg=cfg).state_dict()
    assert state['neck.lateral_convs.0.conv._extra_state'].tolist() == [32, 32]
    MODELS.build(tiny_config('retinanet', 4).model).load_state_dict(state, strict=False)


@pytest.mark.parametrize('detector,key', [('retinanet', 'anchor_generator.strides'),
                                          ('fcos', 'strides')])
def test_head_strides_that_are_not_the_feature_maps_are_refused(detector, key):
    cfg = tiny_config(detector, 4)
    head = cfg.model.bbox_head
    wrong = [4, 8, 16, 32, 64]  # the neck starts at P3: 8 .. 128
    if key == 'strides':
        head.strides = wrong
    else:
        head.anchor_generator.strides = wrong
    model = MODELS.build(cfg.model).eval()
    x = torch.zeros(1, 3, 96, 128)
    with pytest.raises(ValueError, match=re.escape(
            "strides [4, 8, 16, 32, 64] do not match the 5 feature maps ['12x16', '6x8', "
            "'3x4', '2x2', '1x1'] of a 96x128 input (strides [8, 16, 32, 48, 96])")):
        model.extract_feat(x)
    # the configs' own strides pass, on an input no stride divides
    right = tiny_detector(detector, 4)
    assert len(right.extract_feat(torch.zeros(1, 3, 100, 75))) == 5


def test_an_integer_backend_replaces_the_fake_quant_forward_and_is_no_submodule():
    from mmdet.structures import DetDataSample
    from tests.test_integer.tiny_detectors import tiny_images

    model = tiny_detector('retinanet', 4)
    x = tiny_images(1)
    with torch.no_grad():
        reference = model._forward(x)
    keys = set(model.state_dict())
    seen = []

    def backend(inputs):
        seen.append(tuple(inputs.shape))
        return tuple([2 * t for t in kind] for kind in reference)

    model.set_integer_backend(backend)
    assert set(model.state_dict()) == keys
    doubled = model._forward(x)
    assert all(torch.equal(d, 2 * r) for dk, rk in zip(doubled, reference) for d, r in zip(dk, rk))
    sample = DetDataSample(metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64),
                                         scale_factor=(1.0, 1.0)))
    with torch.no_grad():
        predicted = model.predict(x, [sample])
    assert seen == [(1, 3, 64, 64)] * 2 and len(predicted) == 1
    assert hasattr(predicted[0], 'pred_instances')
    model.set_integer_backend(None)
    with torch.no_grad():
        again = model._forward(x)
    assert all(torch.equal(a, r) for ak, rk in zip(again, reference) for a, r in zip(ak, rk))
    with pytest.raises(TypeError, match='must be callable, got int'):
        model.set_integer_backend(3)
