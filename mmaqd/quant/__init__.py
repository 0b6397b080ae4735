"""Quantization primitives in plain PyTorch (no mmdet imports)."""
from .bits import FULL_PRECISION_BITS, VALID_BITS, check_bits, integer_range, is_full_precision
from .bn_fold import FoldedBN, fold_batch_norm
from .clip_quantizer import ClipQuantizer
from .fake_quantize import fake_quantize
from .fixed_point import apply_fixed_point, fixed_point_multiplier
from .level_bn_variants import SharedLevelBN, SyncMultiLevelBN
from .lsq_quantizer import LSQQuantizer
from .minmax_quantizer import MinMaxQuantizer
from .multi_level_bn import LevelNorm, MultiLevelBN
from .integer_aware import EngineRequant, set_integer_aware
from .qadd import AddAlignment, QAdd, add_alignment
from .qbn import QBN
from .qconv import QConv
from .quantizer_base import Quantizer
from .quantizer_types import QUANTIZER_TYPES, get_quantizer_type
from .sync_bn import SyncQBN, global_batch_moments

__all__ = [
    'FULL_PRECISION_BITS', 'VALID_BITS', 'check_bits', 'integer_range', 'is_full_precision',
    'Quantizer', 'LSQQuantizer', 'ClipQuantizer', 'MinMaxQuantizer', 'QUANTIZER_TYPES',
    'get_quantizer_type', 'fake_quantize', 'QConv', 'QBN', 'FoldedBN', 'fold_batch_norm', 'QAdd',
    'AddAlignment', 'add_alignment',
    'fixed_point_multiplier', 'apply_fixed_point', 'LevelNorm', 'MultiLevelBN', 'SharedLevelBN',
    'SyncMultiLevelBN', 'SyncQBN', 'global_batch_moments', 'EngineRequant', 'set_integer_aware'
]
