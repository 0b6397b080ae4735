"""Bit packing of integer codes: exact round trips, exact sizes, refused codes."""
import pytest
import torch

from mmaqd.integer.packing import (code_range, pack_codes, packed_size, signed_bits_needed,
                                   unpack_codes)

CASES = [(bits, signed) for bits in range(2, 9) for signed in (False, True)]


@pytest.mark.parametrize('bits, signed', CASES,
                         ids=[f'{"s" if s else "u"}{b}' for b, s in CASES])
def test_round_trip_every_code(bits, signed):
    low, high = code_range(bits, signed)
    gen = torch.Generator().manual_seed(bits)
    # Every code at least once, then random ones; an odd count leaves a partial byte.
    codes = torch.cat([torch.arange(low, high + 1),
                       torch.randint(low, high + 1, (3 * 5 * 7,), generator=gen)])
    codes = codes[torch.randperm(codes.numel(), generator=gen)][:-1]
    shaped = codes.view(-1, 1, 1) if codes.numel() % 2 else codes.view(2, -1, 1)
    packed, meta = pack_codes(shaped.to(torch.int32), bits, signed)
    assert packed.dtype == torch.uint8 and packed.dim() == 1
    assert packed.numel() == -(-codes.numel() * bits // 8) == packed_size(codes.numel(), bits)
    assert meta == {'shape': list(shaped.shape), 'bits': bits, 'signed': int(signed)}
    restored = unpack_codes(packed, meta)
    assert restored.dtype == torch.int64 and torch.equal(restored, shaped)


@pytest.mark.parametrize('bits', [1, 9, 16])
def test_round_trip_other_widths(bits):
    codes = torch.tensor([[-2**(bits - 1), 2**(bits - 1) - 1, 0], [-1, 0, -1]])
    packed, meta = pack_codes(codes, bits, signed=True)
    assert torch.equal(unpack_codes(packed, meta), codes)


def test_bit_layout_is_little_endian_stream():
    # 2-bit codes 1, 2, 3 -> bits (lsb first) 10 01 11 -> byte 0b00111001.
    packed, _ = pack_codes(torch.tensor([1, 2, 3]), 2, signed=False)
    assert packed.tolist() == [0b00111001]
    # Signed codes are offset by 2^(bits-1): -2, 1 at 2 bits are stored as 0, 3.
    packed, _ = pack_codes(torch.tensor([-2, 1]), 2, signed=True)
    assert packed.tolist() == [0b1100]


def test_empty_codes_round_trip():
    packed, meta = pack_codes(torch.zeros(0, 3, dtype=torch.int64), 4, signed=True)
    assert packed.numel() == 0
    assert unpack_codes(packed, meta).shape == (0, 3)


@pytest.mark.parametrize('codes, bits, signed, bad', [
    ([0, 7, 8], 4, True, 8),
    ([-9, 0], 4, True, -9),
    ([0, -1], 3, False, -1),
    ([255, 256], 8, False, 256),
    ([1, 3, -3], 2, True, 3),
])
def test_out_of_range_code_is_refused(codes, bits, signed, bad):
    with pytest.raises(ValueError) as err:
        pack_codes(torch.tensor(codes), bits, signed)
    message = str(err.value)
    assert f'code {bad} ' in message and f'{bits} ' in message


@pytest.mark.parametrize('bits', [0, 17, 2.0, True, None])
def test_invalid_bits_are_refused(bits):
    with pytest.raises(ValueError, match='bits='):
        pack_codes(torch.tensor([0]), bits, signed=False)


def test_non_integer_codes_are_refused():
    with pytest.raises(TypeError, match='integer tensor'):
        pack_codes(torch.tensor([0.0, 1.0]), 4, signed=False)


def test_unpack_checks_the_stream_length():
    packed, meta = pack_codes(torch.arange(10), 4, signed=False)
    with pytest.raises(ValueError, match='5 bytes'):
        unpack_codes(packed[:-1], meta)
    with pytest.raises(ValueError, match='uint8'):
        unpack_codes(packed.to(torch.int8), meta)


@pytest.mark.parametrize('codes, bits', [
    ([0], 1), ([-1, 0], 1), ([1], 2), ([-2, 1], 2), ([2], 3), ([-3, 3], 3),
    ([-8, 7], 4), ([-255, 255], 9), ([-127, 127], 8), ([-128], 8), ([128], 9),
])
def test_signed_bits_needed(codes, bits):
    assert signed_bits_needed(torch.tensor(codes)) == bits
