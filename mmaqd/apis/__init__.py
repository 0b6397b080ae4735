"""The library API the tools are thin command lines over."""
from .cli import (EXIT_ERROR, EXIT_FAIL, EXIT_PASS, add_common_arguments, emit_result,
                  quiet_logs, run_check, trained_model_parser, verdict)
from .detectors import (build_detector, build_quantized_detector, calibrate, load_config,
                        load_trained, random_calibrated_detector)
from .deploy import METADATA_FORMAT, deploy_metadata
from .images import (DEFAULT_SIZE, calibration_images, dataset_images, eval_images,
                     example_shape, generated_images, merge_batches)

__all__ = [
    'build_detector', 'build_quantized_detector', 'calibrate', 'load_config', 'load_trained',
    'random_calibrated_detector',
    'METADATA_FORMAT', 'deploy_metadata', 'DEFAULT_SIZE', 'calibration_images',
    'dataset_images', 'eval_images', 'example_shape', 'generated_images',
    'merge_batches', 'trained_model_parser', 'add_common_arguments', 'quiet_logs', 'verdict',
    'run_check', 'EXIT_PASS', 'EXIT_FAIL', 'EXIT_ERROR', 'emit_result'
]
