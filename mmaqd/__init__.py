"""mmaqd: fully-quantized (AQD) object detection for MMDetection 3.x.

Importing the package (``custom_imports = dict(imports=['mmaqd'])`` in a config)
registers its models in mmdet's registries and its safe checkpoint loader in
mmengine. :mod:`mmaqd.quant` itself is plain PyTorch.
"""
from . import datasets, engine, models  # noqa: F401  (registration)
from .version import __version__

__all__ = ['__version__']
