import re

import numpy as np
import pytest

from mmaqd.quant import (QUANTIZER_TYPES, ClipQuantizer, LSQQuantizer, MinMaxQuantizer, QConv,
                         check_bits, get_quantizer_type, integer_range)

INVALID_BITS = [0, 1, 9, 16, 33, -4, '4', None, 3.5, 4.0, True, False]
QUANTIZERS = [LSQQuantizer, ClipQuantizer, MinMaxQuantizer]


@pytest.mark.parametrize('bits', [2, 3, 4, 5, 6, 7, 8, 32])
def test_valid_bits(bits):
    assert check_bits(bits, 'x') == bits
    assert type(check_bits(np.int64(bits), 'x')) is int


@pytest.mark.parametrize('bits', INVALID_BITS)
def test_check_bits_names_value_and_owner(bits):
    with pytest.raises(ValueError, match=re.escape(f'my layer: bits={bits!r} is invalid')):
        check_bits(bits, 'my layer')


@pytest.mark.parametrize('bits', INVALID_BITS)
@pytest.mark.parametrize('cls', QUANTIZERS)
def test_quantizer_rejects_invalid_bits(cls, bits):
    with pytest.raises(ValueError, match=re.escape(f'{cls.__name__}: bits={bits!r}')):
        cls(bits, True)
    quantizer = cls(4, False)
    with pytest.raises(ValueError, match=re.escape(f'{cls.__name__}: bits={bits!r}')):
        quantizer.set_bits(bits)
    assert quantizer.bits == 4


@pytest.mark.parametrize('bits', INVALID_BITS)
def test_qconv_rejects_invalid_bits(bits):
    with pytest.raises(ValueError, match=re.escape(f'QConv weight quantizer: bits={bits!r}')):
        QConv(2, 2, 1, w_bits=bits)
    # Also reported when the input is not quantized: a_bits is a config error either way.
    with pytest.raises(ValueError, match=re.escape(f'QConv input quantizer: bits={bits!r}')):
        QConv(2, 2, 1, a_bits=bits, input_quant=None)


@pytest.mark.parametrize('bits', [b for b in INVALID_BITS if b is not None])
def test_qconv_set_bits_rejects_invalid_bits(bits):
    # None means "leave unchanged" in QConv.set_bits, so it is not in this list.
    conv = QConv(2, 2, 1, w_bits=4, a_bits=4)
    with pytest.raises(ValueError, match=re.escape(f'QConv input quantizer: bits={bits!r}')):
        conv.set_bits(a_bits=bits)
    with pytest.raises(ValueError, match=re.escape(f'QConv weight quantizer: bits={bits!r}')):
        conv.set_bits(w_bits=bits)


def test_quantizer_name_in_error():
    with pytest.raises(ValueError, match=r'^head\.cls weight: bits=9 '):
        LSQQuantizer(9, True, name='head.cls weight')


@pytest.mark.parametrize('bits, signed, expected', [
    (2, True, (-2, 1)), (2, False, (0, 3)), (3, True, (-4, 3)), (3, False, (0, 7)),
    (4, True, (-8, 7)), (4, False, (0, 15)), (8, True, (-128, 127)), (8, False, (0, 255))
])
def test_integer_range(bits, signed, expected):
    assert integer_range(bits, signed) == expected


def test_quantizer_type_lookup():
    assert get_quantizer_type('LSQ', 'x') is LSQQuantizer
    assert get_quantizer_type('Clip', 'x') is ClipQuantizer
    assert get_quantizer_type('MinMax', 'x') is MinMaxQuantizer
    with pytest.raises(TypeError):
        QUANTIZER_TYPES['Mine'] = LSQQuantizer


@pytest.mark.parametrize('name', ['lsq', 'PACT', '', None])
def test_unknown_quantizer_type(name):
    with pytest.raises(ValueError) as err:
        get_quantizer_type(name, 'QConv')
    message = str(err.value)
    assert message.startswith(f'QConv: unknown quantizer type {name!r}')
    assert "'LSQ', 'Clip', 'MinMax'" in message
    with pytest.raises(ValueError, match='unknown quantizer type'):
        QConv(2, 2, 1, quantizer=name)
