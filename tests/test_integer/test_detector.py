"""Integer engine of whole detectors: integer-only, equal to its simulation, close to fake-quant."""
import pytest
import torch

from mmaqd.integer import ConversionError, IntAdd, IntConv, convert_detector, ops
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
    stats = code_agreement(int_out, fake_quant, engine.head.output_units())
    # Same network: the outputs agree up to rounding flips (bias and alignment rounding).
    assert stats['relative_error'] < (0.05 if bits >= 4 else 0.25), stats
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
