"""Bits and quantizer types chosen by module-name pattern."""
import pytest
from torch import nn

import mmaqd  # noqa: F401
from mmaqd.models.utils import apply_quant_cfg, format_quant_table
from mmaqd.quant import QConv


class Tiny(nn.Module):

    def __init__(self):
        super().__init__()
        self.backbone = nn.Module()
        self.backbone.conv1 = QConv(3, 4, 3, input_quant=None)
        self.backbone.layer1 = QConv(4, 4, 3)
        self.neck = nn.Module()
        self.neck.lateral = QConv(4, 4, 1)
        self.bbox_head = nn.Module()
        self.bbox_head.tower = QConv(4, 4, 3)
        self.bbox_head.retina_cls = QConv(4, 2, 3)


def bits(model):
    return {n: (m.w_bits, m.a_bits, m.quantizer) for n, m in model.named_modules()
            if isinstance(m, QConv)}


def test_defaults_overrides_and_later_override_wins():
    model = Tiny()
    rows = apply_quant_cfg(model, dict(
        w_bits=4, a_bits=3, overrides=[
            dict(pattern=r'^backbone\.conv1$', w_bits=8),
            dict(pattern=r'retina_cls$', w_bits=8, a_bits=8),
            dict(pattern=r'^bbox_head\.', a_bits=2),
        ]))
    assert bits(model) == {
        'backbone.conv1': (8, None, 'LSQ'),
        'backbone.layer1': (4, 3, 'LSQ'),
        'neck.lateral': (4, 3, 'LSQ'),
        'bbox_head.tower': (4, 2, 'LSQ'),
        'bbox_head.retina_cls': (8, 2, 'LSQ'),
    }
    assert [r['name'] for r in rows] == list(bits(model))
    table = format_quant_table(rows)
    assert 'backbone.conv1' in table and ' int ' in table


def test_scope_keeps_the_rest_at_32_bits_and_quantizer_type_can_change():
    model = Tiny()
    apply_quant_cfg(model, dict(w_bits=2, a_bits=2, scope='backbone+neck',
                                quantizer='Clip'))
    b = bits(model)
    assert b['neck.lateral'] == (2, 2, 'Clip') and b['backbone.layer1'] == (2, 2, 'Clip')
    assert b['bbox_head.tower'][:2] == (32, 32)
    assert type(model.neck.lateral.weight_quantizer).__name__ == 'ClipQuantizer'


def test_none_leaves_everything_full_precision():
    model = Tiny()
    apply_quant_cfg(model, None)
    assert {v[:2] for v in bits(model).values()} == {(32, 32), (32, None)}


@pytest.mark.parametrize('cfg, message', [
    (dict(overrides=[dict(pattern=r'^nothing\.here$', w_bits=8)]), r"\^nothing\\\\.here\$"),
    (dict(w_bits=9), 'bits=9'),
    (dict(a_bits='4'), "bits='4'"),
    (dict(overrides=[dict(pattern='conv1', w_bits=1)]), r"'conv1'.*bits=1"),
    (dict(scope='heads'), "scope='heads'"),
    (dict(wbits=4), r"\['wbits'\]"),
    (dict(quantizer='PACT'), 'PACT'),
    (dict(overrides=[dict(w_bits=4)]), 'needs a "pattern"'),
    (dict(overrides=[dict(pattern='(')]), r"pattern '\('"),
])
def test_bad_settings_are_named(cfg, message):
    with pytest.raises(ValueError, match=message):
        apply_quant_cfg(Tiny(), cfg)


def test_override_outside_scope_matches_nothing():
    with pytest.raises(ValueError, match='match no QConv in scope'):
        apply_quant_cfg(Tiny(), dict(scope='backbone',
                                     overrides=[dict(pattern='retina_cls', w_bits=8)]))


def test_a_bits_for_the_integer_image_input_is_refused():
    with pytest.raises(ValueError, match=r"\['\^backbone\\\\.conv1\$'\] set a_bits, but every "
                                         r'QConv they match reads the integer image'):
        apply_quant_cfg(Tiny(), dict(w_bits=4, a_bits=4, overrides=[
            dict(pattern=r'^backbone\.conv1$', w_bits=8, a_bits=8)]))
    # a pattern that also reaches convs with an input quantizer sets theirs
    model = Tiny()
    apply_quant_cfg(model, dict(w_bits=4, a_bits=4, overrides=[
        dict(pattern=r'^backbone\.', a_bits=8)]))
    assert bits(model)['backbone.layer1'] == (4, 8, 'LSQ')
    assert bits(model)['backbone.conv1'] == (4, None, 'LSQ')
