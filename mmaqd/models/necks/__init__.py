from .qfpn import QFPN

__all__ = ['QFPN']
