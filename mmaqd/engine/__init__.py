from . import checkpoint_loading  # noqa: F401  (registers the local checkpoint loader)
from .hooks import (AtomicCheckpointHook, BitWidthScheduleHook, FreezeBNStatsHook, IntegerInferenceHook,
                    QuantCalibrationHook, quantizers_to_calibrate)
from .hooks import NonFiniteOutputError, NonFiniteQuantizerInputError, QuantNaNGuardHook

__all__ = [
    'AtomicCheckpointHook', 'BitWidthScheduleHook', 'FreezeBNStatsHook', 'IntegerInferenceHook', 'QuantCalibrationHook',
    'quantizers_to_calibrate', 'QuantNaNGuardHook', 'NonFiniteQuantizerInputError',
    'NonFiniteOutputError'
]
