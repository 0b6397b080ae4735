from .aqd_detectors import AQDFCOS, AQDRetinaNet

__all__ = ['AQDRetinaNet', 'AQDFCOS']
