from .aqd_fcos_head import AQDFCOSHead
from .aqd_retina_head import AQDRetinaHead

__all__ = ['AQDRetinaHead', 'AQDFCOSHead']
