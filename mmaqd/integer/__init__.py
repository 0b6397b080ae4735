"""Integer-only inference engine in plain PyTorch (no mmdet imports).

:func:`convert_detector` turns a trained AQD detector into an
:class:`IntegerDetector` whose forward pass is integer-only (``arith='int'``)
or its exact float64 simulation (``arith='float'``). :func:`export_integer`
writes it as one self-contained file (layer graph, bit-packed weights, integer
constants) that :func:`load_integer` runs without the engine's modules.
:func:`sync_engine_units` gives an integer-aware fake-quant model the engine's
units (:mod:`~mmaqd.integer.simulation`).
"""
from .convert import ConversionError, EngineLinks, convert_add, convert_conv, fold_bn
from .detector import IntegerDetector, check_integer_preprocessor, convert_detector
from .export import ExportError, IntegerProgram, export_integer, load_integer
from .layers import IntAdd, IntConv
from .packing import pack_codes, unpack_codes
from .program import ProgramError, record_program, run_program
from .requant import (INT32_MAX, MANTISSA_BITS, MAX_SHIFT, accumulator_bound,
                      check_accumulator_fits, multiply_by_quantized_multiplier,
                      quantize_multiplier, requantize, rounding_right_shift)
from .simulation import apply_engine_links, engine_links, sync_engine_units

__all__ = [
    'INT32_MAX', 'MANTISSA_BITS', 'MAX_SHIFT', 'quantize_multiplier', 'rounding_right_shift',
    'multiply_by_quantized_multiplier', 'requantize', 'accumulator_bound',
    'check_accumulator_fits', 'ConversionError', 'convert_add', 'convert_conv', 'fold_bn',
    'IntAdd', 'IntConv', 'IntegerDetector', 'check_integer_preprocessor', 'convert_detector',
    'pack_codes', 'unpack_codes', 'ProgramError', 'record_program', 'run_program',
    'ExportError', 'IntegerProgram', 'export_integer', 'load_integer', 'EngineLinks',
    'engine_links', 'apply_engine_links', 'sync_engine_units'
]
