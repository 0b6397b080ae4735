"""mmdet glue: mmaqd's models registered in mmdet's registries."""
from . import layers  # noqa: F401  (registration)
from .backbones import QResNet
from .dense_heads import AQDFCOSHead, AQDRetinaHead
from .detectors import AQDFCOS, AQDRetinaNet
from .necks import QFPN

__all__ = ['QResNet', 'QFPN', 'AQDRetinaHead', 'AQDFCOSHead', 'AQDRetinaNet', 'AQDFCOS']
