from . import checkpoint_loading  # noqa: F401  (registers the local checkpoint loader)
from .hooks import (BitWidthScheduleHook, FreezeBNStatsHook, QuantCalibrationHook,
                    quantizers_to_calibrate)

__all__ = [
    'BitWidthScheduleHook', 'FreezeBNStatsHook', 'QuantCalibrationHook',
    'quantizers_to_calibrate'
]
