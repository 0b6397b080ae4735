from .atomic_checkpoint_hook import AtomicCheckpointHook
from .bit_width_schedule_hook import BitWidthScheduleHook
from .freeze_bn_stats_hook import FreezeBNStatsHook
from .integer_aware_qat_hook import IntegerAwareQATHook
from .integer_inference_hook import IntegerInferenceHook
from .quant_calibration_hook import QuantCalibrationHook, quantizers_to_calibrate
from .quant_nan_guard_hook import (NonFiniteOutputError, NonFiniteQuantizerInputError,
                                   QuantNaNGuardHook)

__all__ = [
    'AtomicCheckpointHook', 'BitWidthScheduleHook', 'FreezeBNStatsHook', 'IntegerAwareQATHook',
    'IntegerInferenceHook', 'QuantCalibrationHook',
    'quantizers_to_calibrate', 'QuantNaNGuardHook', 'NonFiniteQuantizerInputError',
    'NonFiniteOutputError'
]
