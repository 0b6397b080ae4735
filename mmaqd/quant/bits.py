"""Bit-width validation and integer code ranges shared by every quantizer."""
from numbers import Integral
from typing import Tuple

#: Bit width meaning "not quantized": the quantizer is the identity.
FULL_PRECISION_BITS = 32

#: Every bit width a quantizer accepts.
VALID_BITS = (2, 3, 4, 5, 6, 7, 8, FULL_PRECISION_BITS)


def check_bits(bits: object, owner: str) -> int:
    """Validate a bit width.

    Args:
        bits (object): The value to check.
        owner (str): Who asked, named in the error (e.g. ``'QConv weight quantizer'``).

    Returns:
        int: ``bits`` as a plain int.

    Raises:
        ValueError: If ``bits`` is not an integer in 2..8 or 32. Booleans, strings,
            floats and ``None`` are rejected even where Python would coerce them.
    """
    if isinstance(bits, bool) or not isinstance(bits, Integral) or int(bits) not in VALID_BITS:
        raise ValueError(f'{owner}: bits={bits!r} is invalid; expected an int in 2..8, '
                         f'or {FULL_PRECISION_BITS} for full precision')
    return int(bits)


def is_full_precision(bits: int) -> bool:
    """Whether ``bits`` means "not quantized".

    Args:
        bits (int): A validated bit width.

    Returns:
        bool: True for 32 bits.
    """
    return bits == FULL_PRECISION_BITS


def integer_range(bits: int, signed: bool) -> Tuple[int, int]:
    """The code range ``(Qn, Qp)`` of a uniform ``bits``-bit quantizer.

    Args:
        bits (int): A validated bit width below 32.
        signed (bool): Two's-complement range if True, else ``0..2^b-1``.

    Returns:
        tuple[int, int]: ``(-2^(b-1), 2^(b-1)-1)`` if signed, else ``(0, 2^b-1)``.
    """
    if signed:
        return -2**(bits - 1), 2**(bits - 1) - 1
    return 0, 2**bits - 1
