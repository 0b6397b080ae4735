"""Integer-only inference engine in plain PyTorch (no mmdet imports)."""
from .requant import (INT32_MAX, MANTISSA_BITS, MAX_SHIFT, accumulator_bound,
                      check_accumulator_fits, multiply_by_quantized_multiplier,
                      quantize_multiplier, requantize, rounding_right_shift)

__all__ = [
    'INT32_MAX', 'MANTISSA_BITS', 'MAX_SHIFT', 'quantize_multiplier', 'rounding_right_shift',
    'multiply_by_quantized_multiplier', 'requantize', 'accumulator_bound',
    'check_accumulator_fits'
]
