"""Integer engine of whole detectors: integer-only, equal to its simulation, true to fake-quant."""
import pytest
import torch

from mmaqd.integer import ConversionError, EngineLinks, IntAdd, IntConv, convert_detector, ops
from mmaqd.integer.compare import code_agreement, exact_agreement

from .tiny_detectors import tiny_config, tiny_detector, tiny_images

CASES = [(d, b) for d in ('retinanet', 'fcos') for b in (2, 3, 4, 8)]


@pytest.mark.parametrize('detector, bits', CASES, ids=[f'{d}-w{b}' for d, b in CASES])
def test_engine_equals_simulation_and_tracks_fake_quant(detector, bits):
    model = tiny_detector(detector, bits)
    engine = convert_detector(model)
    x = tiny_images(2, seed=7)
    seen_dtypes = set()

    def record(module, args, output):
        seen_dtypes.update(str(t.dtype) for t in (*args, output) if torch.is_tensor(t))

    handles = [m.register_forward_hook(record) for m in engine.modules()
               if isinstance(m, (IntConv, IntAdd))]
    int_out = engine(x, 'int')
    for h in handles:
        h.remove()
    assert len(handles) > 30 and seen_dtypes == {'torch.int64'}
    sim_out = engine(x, 'float')
    assert all(t.dtype == torch.float64 for kind in sim_out for t in kind)
    exact = exact_agreement(int_out, sim_out)
    assert exact['equal_fraction'] == 1.0 and exact['max_abs_diff'] == 0
    assert len(int_out) == (3 if detector == 'fcos' else 2) and len(int_out[0]) == 5
    with torch.no_grad():
        fake_quant = model.bbox_head.raw_forward(model.neck(model.backbone(x)))
    # (Agreement with the fake-quant model: test_engine_computes_what_the_fake_quant_model_means.)
    real = engine.real_outputs(int_out)
    for ref_kind, kind in zip(fake_quant, real):
        for ref, out in zip(ref_kind, kind):
            assert out.shape == ref.shape and out.dtype == torch.float32


def test_pooling_upsampling_and_relu_ops_see_integers_only(monkeypatch):
    engine = convert_detector(tiny_detector('retinanet', 4))
    seen = []
    for name in ('max_pool2d', 'upsample_nearest', 'relu'):
        original = getattr(ops, name)

        def wrapped(x, *args, _original=original, **kwargs):
            seen.append(x.dtype)
            return _original(x, *args, **kwargs)

        monkeypatch.setattr(ops, name, wrapped)
    engine(tiny_images(1), 'int')
    assert len(seen) > 40 and set(seen) == {torch.int64}


def test_bits_change_the_engine_outputs():
    x = tiny_images(1)
    outs = [convert_detector(tiny_detector('retinanet', b))(x)[0][0] for b in (2, 8)]
    assert not torch.equal(outs[0], outs[1])


def test_non_integer_models_are_refused_with_the_reason():
    cfg = tiny_config('fcos', 4)
    cfg.model.bbox_head.norm_cfg = dict(type='GN', num_groups=4)
    with pytest.raises(ConversionError, match='GroupNorm .* no integer form'):
        convert_detector(tiny_detector('fcos', 4, cfg=cfg))
    cfg = tiny_config('retinanet', 4)
    cfg.model.data_preprocessor.std = [58.4, 57.1, 57.4]
    with pytest.raises(ConversionError, match=r'std \[58.4.* integer mean and std 1'):
        convert_detector(tiny_detector('retinanet', 4, cfg=cfg))
    cfg = tiny_config('retinanet', 4)
    cfg.model.quant_cfg.scope = 'backbone'
    cfg.model.quant_cfg.overrides = cfg.model.quant_cfg.overrides[:1]  # the stem's
    with pytest.raises(ConversionError, match=r'neck\.lateral_convs\.0\.conv: .* 32 bits'):
        convert_detector(tiny_detector('retinanet', 4, cfg=cfg))
    model = tiny_detector('retinanet', 4)
    model.bbox_head.retina_cls.input_quantizers[3].initialized.fill_(False)
    with pytest.raises(ConversionError, match=r'retina_cls: .*level 3.* never initialised'):
        convert_detector(model)
    model.train()
    with pytest.raises(ConversionError, match='eval mode'):
        convert_detector(model)


def test_non_integer_images_are_refused():
    engine = convert_detector(tiny_detector('retinanet', 4))
    with pytest.raises(ConversionError, match='not an integer image'):
        engine(tiny_images(1) + 0.5)


def conv_bn_pairs(model):
    """``(conv, bn, level)`` for every conv of the detector that a BN follows."""
    backbone, pairs = model.backbone, []
    pairs.append((backbone.conv1, backbone.norm1, 0))
    for name in backbone.res_layers:
        for block in getattr(backbone, name):
            for i in (1, 2, 3):
                if hasattr(block, f'conv{i}'):
                    pairs.append((getattr(block, f'conv{i}'), getattr(block, f'norm{i}'), 0))
            if block.downsample is not None:
                pairs.append((block.downsample[0], block.downsample[1], 0))
    for module in list(model.neck.lateral_convs) + list(model.neck.fpn_convs):
        pairs.append((module.conv, module.norm, 0))
    for tower in (model.bbox_head.cls_convs, model.bbox_head.reg_convs):
        for module in tower:
            pairs += [(module.conv, bn, level) for level, bn in enumerate(module.norm.bns)]
    return pairs


def random_bns(model, gen):
    """Random BN gammas (30% negative) and betas, so that folding and signs matter."""
    with torch.no_grad():
        for _, bn, _ in conv_bn_pairs(model):
            c = bn.num_features
            sign = torch.where(torch.rand(c, generator=gen) < 0.3, -1.0, 1.0)
            bn.weight.copy_(sign * (0.5 + torch.rand(c, generator=gen)))
            bn.bias.copy_(0.5 * torch.randn(c, generator=gen))


def randomise_and_pre_round(model, seed=0):
    """Random per-level BN parameters and FCOS scales, in float64; then move each BN's
    running mean so that its folded bias is an exact integer number of accumulator units
    (the engine's only rounding that the fake-quant model does not simulate)."""
    gen = torch.Generator().manual_seed(seed)
    model.double()
    random_bns(model, gen)
    with torch.no_grad():
        for conv, bn, level in conv_bn_pairs(model):
            c = bn.num_features
            bn.running_var.mul_(0.5 + torch.rand(c, generator=gen))
            bn.running_mean.add_(0.1 * torch.randn(c, generator=gen) * bn.running_var.sqrt())
        for scale in getattr(model.bbox_head, 'scales', []):
            scale.scale.copy_(torch.empty(()).uniform_(0.5, 2.0, generator=gen))
        for conv, bn, level in conv_bn_pairs(model):
            unit = conv.accumulator_unit(level).double()
            multiplier = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            conv_bias = conv.bias if conv.bias is not None else 0.0
            shift = bn.bias / multiplier - bn.running_mean + conv_bias
            bn.running_mean.copy_(bn.bias / multiplier + conv_bias -
                                  torch.round(shift / unit) * unit)


@pytest.mark.parametrize('detector, bits', [('retinanet', 2), ('retinanet', 4), ('fcos', 2),
                                            ('fcos', 4)])
def test_engine_computes_what_the_fake_quant_model_means(detector, bits):
    """With the same rounding on both sides, every head output agrees within 0.5 LSB.

    The fake-quant model runs in float64 with pre-rounded BN biases and QAdd's
    alignment simulation; what is left is the rounding of the predictors' bias.
    A wrong level, BN, unit, sign or alignment in the conversion breaks this.
    """
    model = tiny_detector(detector, bits)
    randomise_and_pre_round(model)
    links = EngineLinks()
    engine = convert_detector(model, links)
    for qadd, unit_x, unit_y in links.add_units:  # the engine's units, from the conversion
        qadd.set_units(unit_x, unit_y)
        qadd.simulate_alignment = True
    x = tiny_images(2, seed=3).double()
    with torch.no_grad():
        fake_quant = model.bbox_head.raw_forward(model.neck(model.backbone(x)))
    stats = code_agreement(engine(x), fake_quant, engine.head.output_units())
    assert stats['max_lsb'] <= 0.5 + 1e-6, stats
    assert stats['equal_fraction'] > 0.99
