"""Bit packing of integer codes: every code stored in exactly ``bits`` bits.

Codes are laid out in row-major order, each as ``bits`` consecutive bits of one
little-endian bit stream (least significant bit first), so ``n`` codes take
``ceil(n * bits / 8)`` bytes. Signed codes are stored with an offset of
``2^(bits-1)``, which maps the two's-complement range onto ``0..2^bits-1``.
"""
from numbers import Integral
from typing import Any, Dict, Tuple

import torch

#: Widest code :func:`pack_codes` stores (Clip's 8-bit odd grid needs 9 bits).
MAX_PACK_BITS = 16

_BYTE = 8


def _check_bits(bits: object) -> int:
    if isinstance(bits, bool) or not isinstance(bits, Integral) or \
            not 1 <= int(bits) <= MAX_PACK_BITS:
        raise ValueError(f'bits={bits!r} is invalid; expected an int in 1..{MAX_PACK_BITS}')
    return int(bits)


def code_range(bits: int, signed: bool) -> Tuple[int, int]:
    """The codes ``bits`` bits hold: two's-complement if ``signed``, else ``0..2^bits-1``.

    Args:
        bits (int): Bit width, 1..16.
        signed (bool): Signed codes.

    Returns:
        tuple[int, int]: The smallest and the largest code.
    """
    bits = _check_bits(bits)
    return (-2**(bits - 1), 2**(bits - 1) - 1) if signed else (0, 2**bits - 1)


def signed_bits_needed(codes: torch.Tensor) -> int:
    """The fewest bits whose two's-complement range holds every code (at least 1).

    Args:
        codes (Tensor): Integer codes.

    Returns:
        int: The bit width.
    """
    if codes.numel() == 0:
        return 1
    low, high = int(codes.min()), int(codes.max())
    bits = 1
    while not -2**(bits - 1) <= low <= high <= 2**(bits - 1) - 1:
        bits += 1
    return bits


def packed_size(numel: int, bits: int) -> int:
    """int: Bytes that ``numel`` codes of ``bits`` bits take once packed."""
    return -(-numel * _check_bits(bits) // _BYTE)


def pack_codes(codes: torch.Tensor, bits: int,
               signed: bool) -> Tuple[torch.Tensor, Dict[str, Any]]:
    """Pack integer codes into a byte stream, ``bits`` bits per code.

    Args:
        codes (Tensor): Integer codes of any shape.
        bits (int): Bits per code, 1..16.
        signed (bool): The codes are two's-complement ``bits``-bit values
            (stored with an offset of ``2^(bits-1)``); else ``0..2^bits-1``.

    Returns:
        tuple[Tensor, dict]: The 1-D uint8 packed stream and its metadata
        ``{'shape': list[int], 'bits': int, 'signed': int}``, which
        :func:`unpack_codes` needs.

    Raises:
        TypeError: If ``codes`` is not an integer tensor.
        ValueError: If ``bits`` is invalid or a code does not fit in ``bits``
            bits (the message names the first such code).
    """
    bits = _check_bits(bits)
    if codes.dtype == torch.bool or codes.is_floating_point() or codes.is_complex():
        raise TypeError(f'pack_codes: codes must be an integer tensor, got {codes.dtype}')
    low, high = code_range(bits, signed)
    flat = codes.detach().reshape(-1).to(torch.int64).cpu()
    bad = (flat < low) | (flat > high)
    if bad.any():
        raise ValueError(f'pack_codes: code {int(flat[bad][0])} does not fit in {bits} '
                         f'{"signed" if signed else "unsigned"} bits (range {low}..{high}); '
                         f'{int(bad.sum())} code(s) out of range')
    unsigned = flat - low
    planes = torch.empty(flat.numel(), bits, dtype=torch.uint8)
    for k in range(bits):
        planes[:, k] = (unsigned >> k) & 1
    stream = planes.reshape(-1)
    stream = torch.cat([stream, stream.new_zeros(-stream.numel() % _BYTE)]).view(-1, _BYTE)
    packed = torch.zeros(stream.shape[0], dtype=torch.uint8)
    for j in range(_BYTE):
        packed |= stream[:, j] << j
    return packed, {'shape': list(codes.shape), 'bits': bits, 'signed': int(bool(signed))}


def unpack_codes(packed: torch.Tensor, meta: Dict[str, Any]) -> torch.Tensor:
    """Inverse of :func:`pack_codes`.

    Args:
        packed (Tensor): The 1-D uint8 stream.
        meta (dict): Its metadata: ``shape``, ``bits`` and ``signed`` (other keys
            are ignored).

    Returns:
        Tensor: The int64 codes, with their original shape.

    Raises:
        ValueError: If the stream's dtype or length does not match the metadata.
    """
    bits = _check_bits(meta['bits'])
    shape = [int(s) for s in meta['shape']]
    numel = 1
    for s in shape:
        numel *= s
    expected = packed_size(numel, bits)
    if packed.dtype != torch.uint8 or packed.dim() != 1 or packed.numel() != expected:
        raise ValueError(f'unpack_codes: expected a 1-D uint8 stream of {expected} bytes for '
                         f'{numel} codes of {bits} bits, got {packed.dtype} of shape '
                         f'{tuple(packed.shape)}')
    stream = torch.empty(packed.numel(), _BYTE, dtype=torch.uint8)
    for j in range(_BYTE):
        stream[:, j] = (packed >> j) & 1
    planes = stream.reshape(-1)[:numel * bits].view(numel, bits).to(torch.int64)
    unsigned = torch.zeros(numel, dtype=torch.int64)
    for k in range(bits):
        unsigned |= planes[:, k] << k
    low, _ = code_range(bits, bool(meta['signed']))
    return (unsigned + low).view(shape)


__all__ = ['MAX_PACK_BITS', 'code_range', 'signed_bits_needed', 'packed_size', 'pack_codes',
           'unpack_codes']
