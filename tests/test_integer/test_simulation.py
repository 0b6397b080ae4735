"""Integer-aware fake quantization of whole detectors equals the integer engine."""
import pytest
import torch

from mmaqd.integer import apply_engine_links, convert_detector, engine_links, sync_engine_units
from mmaqd.integer.compare import code_agreement
from mmaqd.quant import QAdd, QConv, set_integer_aware

from .test_detector import random_bns
from .tiny_detectors import tiny_config, tiny_detector, tiny_images


def head_outputs(model, x):
    with torch.no_grad():
        return model.bbox_head.raw_forward(model.neck(model.backbone(x)))


@pytest.mark.parametrize('detector, bits', [('retinanet', 2), ('retinanet', 4), ('fcos', 2),
                                            ('fcos', 4)])
def test_integer_aware_eval_forward_is_the_engine_on_every_output(detector, bits):
    """float32, no pre-rounding: every head output is the engine's integer times its unit.

    Trained conv biases (FCOS's head convs have them, before a BN) are folded into
    the BN's one integer bias by the engine: the simulation must not round them twice.
    """
    model = tiny_detector(detector, bits)
    generator = torch.Generator().manual_seed(0)
    random_bns(model, generator)
    for module in model.modules():
        if isinstance(module, QConv) and module.bias is not None:
            module.bias.data = 0.3 * torch.randn(module.bias.shape, generator=generator)
    engine = convert_detector(model)
    x = tiny_images(2, seed=3)
    units = engine.head.output_units()
    plain = code_agreement(engine(x), head_outputs(model, x), units)
    set_integer_aware(model)
    counts = sync_engine_units(model)
    assert counts['bn'] == 48 and counts['bn_shared'] == 0 and counts['add'] == 10
    stats = code_agreement(engine(x), head_outputs(model, x), units)
    assert stats['equal_fraction'] == 1.0 and stats['max_lsb'] < 0.05, stats
    assert plain['equal_fraction'] < 0.5  # what the simulation fixes
    set_integer_aware(model, False)
    again = code_agreement(engine(x), head_outputs(model, x), units)
    assert again == plain


def test_conversion_leaves_the_model_unchanged():
    model = tiny_detector('retinanet', 4)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    links = engine_links(model)
    convert_detector(model)
    assert not model.training
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert all(m.unit_x is None for m in model.modules() if isinstance(m, QAdd))
    # the links name the model's own layers: 10 adds, a requantization per quantizer
    adds = [m for m in model.modules() if isinstance(m, QAdd)]
    assert {id(a) for a, _, _ in links.add_units} == {id(a) for a in adds}
    assert len(links.requants) == 57


def test_links_of_a_training_model_restore_its_mode():
    model = tiny_detector('retinanet', 4).train()
    engine_links(model)
    assert model.training and model.backbone.norm1.training


def test_a_bn_shared_by_levels_keeps_its_float_bias():
    cfg = tiny_config('retinanet', 4)
    cfg.model.bbox_head.norm_cfg = dict(type='SharedLevelBN')
    model = tiny_detector('retinanet', 4, cfg=cfg)
    set_integer_aware(model)
    counts = apply_engine_links(engine_links(model))
    towers = len(model.bbox_head.cls_convs) + len(model.bbox_head.reg_convs)
    assert towers > 0 and counts['bn_shared'] == towers  # one BN per tower conv, 5 levels
    assert model.bbox_head.cls_convs[0].norm.bn.input_unit is None
    assert model.backbone.norm1.input_unit is not None


def test_nothing_is_set_before_every_quantizer_has_a_scale():
    model = tiny_detector('retinanet', 4)
    model.bbox_head.retina_cls.input_quantizers[2].initialized.fill_(False)
    assert sync_engine_units(model) is None
    assert model.backbone.norm1.input_unit is None


def test_a_quantizer_shared_by_levels_with_different_units_stays_plain():
    model = tiny_detector('retinanet', 4)
    set_integer_aware(model)
    links = engine_links(model)
    quantizer, unit, m0, shift = links.requants[-1]
    links.requants.append((quantizer, unit, m0, shift))  # the same on a second level: kept
    counts = apply_engine_links(links)
    assert counts['requant_shared'] == 0 and quantizer.engine_requant is not None
    links.requants.append((quantizer, 2 * unit, m0, shift + 1))  # another producer unit
    counts = apply_engine_links(links)
    assert counts['requant_shared'] == 1 and counts['requant'] == 56
    assert quantizer.engine_requant is None


def test_a_bn_folded_with_different_conv_biases_keeps_its_float_bias():
    model = tiny_detector('retinanet', 4)
    set_integer_aware(model)
    links = engine_links(model)
    bn, level, unit, _ = links.bn_units[0]
    bias = torch.linspace(-0.5, 0.5, bn.num_features)
    links.bn_units[0] = (bn, level, unit, bias)
    links.bn_units.append((bn, level + 1, unit, bias.clone()))  # the same numbers: kept
    counts = apply_engine_links(links)
    assert counts['bn_shared'] == 0 and torch.equal(bn.conv_bias, bias.double())
    links.bn_units.append((bn, level + 2, unit, None))  # no bias at another level
    counts = apply_engine_links(links)
    assert counts['bn_shared'] == 1 and bn.input_unit is None and bn.conv_bias is None
    links.bn_units[-1] = (bn, level + 2, unit, bias + 0.25)  # another bias
    assert apply_engine_links(links)['bn_shared'] == 1 and bn.input_unit is None
