from .qresnet import QBasicBlock, QBottleneck, QResNet

__all__ = ['QResNet', 'QBasicBlock', 'QBottleneck']
