"""The library API the tools are thin command lines over."""
from .cli import trained_model_parser
from .detectors import (build_detector, build_quantized_detector, calibrate, load_config,
                        load_trained)
from .images import (DEFAULT_SIZE, dataset_images, eval_images, example_shape,
                     generated_images, merge_batches)

__all__ = [
    'build_detector', 'build_quantized_detector', 'calibrate', 'load_config', 'load_trained',
    'DEFAULT_SIZE', 'dataset_images', 'eval_images', 'example_shape', 'generated_images',
    'merge_batches', 'trained_model_parser'
]
