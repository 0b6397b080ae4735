from . import checkpoint_loading  # noqa: F401  (registers the local checkpoint loader)
from .hooks import (BitWidthScheduleHook, FreezeBNStatsHook, IntegerInferenceHook,
                    QuantCalibrationHook, quantizers_to_calibrate)
from .hooks import NonFiniteQuantizerInputError, QuantNaNGuardHook

__all__ = [
    'BitWidthScheduleHook', 'FreezeBNStatsHook', 'IntegerInferenceHook', 'QuantCalibrationHook',
    'quantizers_to_calibrate', 'QuantNaNGuardHook', 'NonFiniteQuantizerInputError'
]
