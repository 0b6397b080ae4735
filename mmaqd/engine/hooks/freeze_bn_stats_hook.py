"""Freeze BN running statistics for the last part of quantization-aware training."""
from mmengine.hooks import Hook
from mmdet.registry import HOOKS
from torch.nn.modules.batchnorm import _BatchNorm


@HOOKS.register_module()
class FreezeBNStatsHook(Hook):
    """From iteration (epoch) ``begin`` on, every BN normalises with its running
    statistics and stops updating them (a common QAT practice: the integer model
    uses exactly those statistics). Its affine parameters keep training.

    The runner puts the model in train mode before every iteration, so the BNs are
    put back in eval mode before every iteration.

    Args:
        begin (int): First iteration (epoch) with frozen statistics.
        by_epoch (bool): ``begin`` counts epochs. Defaults to False.
    """

    priority = 'LOW'

    def __init__(self, begin: int, by_epoch: bool = False) -> None:
        if isinstance(begin, bool) or not isinstance(begin, int) or begin < 0:
            raise ValueError(f'FreezeBNStatsHook: begin={begin!r} is invalid; expected an '
                             f'int >= 0')
        self.begin = begin
        self.by_epoch = by_epoch
        self.logged = False

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        progress = runner.epoch if self.by_epoch else runner.iter
        if progress < self.begin:
            return
        frozen = 0
        for module in runner.model.modules():
            if isinstance(module, _BatchNorm):
                module.eval()
                frozen += 1
        if not self.logged:
            runner.logger.info(f'FreezeBNStatsHook: {"epoch" if self.by_epoch else "iter"} '
                               f'{progress}: BN statistics of {frozen} layers frozen')
            self.logged = True
