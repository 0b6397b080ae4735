"""mmdet glue: mmaqd's models registered in mmdet's registries."""
from . import layers  # noqa: F401  (registration)
from .dense_heads import AQDFCOSHead, AQDRetinaHead

__all__ = ['AQDRetinaHead', 'AQDFCOSHead']
