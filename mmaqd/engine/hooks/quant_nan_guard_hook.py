"""Stop at the first NaN / Inf that reaches a quantizer, naming the layer and iteration."""
from typing import List, Optional, Sequence, Tuple

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmdet.registry import HOOKS
from torch import nn

from mmaqd.quant import Quantizer

#: The loops the guard can watch.
MODES = ('train', 'val', 'test')


class NonFiniteQuantizerInputError(FloatingPointError):
    """A quantizer received NaN or Inf values (or holds a non-finite scale)."""


def _count_non_finite(x: torch.Tensor) -> Tuple[int, int]:
    """Numbers of NaN and of +-Inf values in ``x``."""
    return int(torch.isnan(x).sum()), int(torch.isinf(x).sum())


@HOOKS.register_module()
class QuantNaNGuardHook(Hook):
    """Raise at the first non-finite tensor that reaches a quantizer.

    A NaN or Inf fed to a fake quantizer is rounded and clamped into plausible
    looking codes or spreads silently through the scale gradient, so a diverged
    run can go on for many iterations before the loss shows it. This hook adds a
    forward pre-hook to every :class:`~mmaqd.quant.Quantizer` of the model (the
    input quantizers see activations, the weight quantizers the weights) that
    checks its input and its own learned scale with ``torch.isfinite`` and raises
    :class:`NonFiniteQuantizerInputError` (a ``FloatingPointError``) naming the
    quantizer's module name, the iteration and the numbers of NaN and Inf values.
    The first quantizer to complain is the first layer whose input went bad; a
    NaN gradient shows up at the next iteration, in the weights it was applied to.

    The pre-hooks are added before training / validation / testing and removed
    after the run. Forward passes before the first training iteration (e.g. the
    calibration of :class:`QuantCalibrationHook`, which runs after this hook
    because of its lower priority) are checked too.

    Args:
        check_every (int): Check one iteration (val/test: batch) in this many; the
            check reads every activation once. Defaults to 1.
        modes (sequence[str]): Loops to watch, some of ``'train'``, ``'val'``,
            ``'test'``. Defaults to all three.
    """

    priority = 'VERY_HIGH'

    def __init__(self, check_every: int = 1, modes: Sequence[str] = MODES) -> None:
        if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 1:
            raise ValueError(f'QuantNaNGuardHook: check_every={check_every!r} is invalid; '
                             f'expected an int >= 1')
        if isinstance(modes, str) or not set(modes) <= set(MODES):
            raise ValueError(f'QuantNaNGuardHook: modes={modes!r} is invalid; expected a '
                             f'sequence of some of {MODES}')
        self.check_every = check_every
        self.modes = tuple(modes)
        self._handles: List[torch.utils.hooks.RemovableHandle] = []
        self._where: Optional[str] = None

    @property
    def num_guarded(self) -> int:
        """int: Number of quantizers currently guarded."""
        return len(self._handles)

    def attach(self, model: nn.Module) -> None:
        """Add the pre-hooks to every quantizer of ``model`` (once; later calls do nothing).

        Args:
            model (nn.Module): The model, possibly wrapped (DDP).
        """
        if self._handles:
            return
        model = model.module if is_model_wrapper(model) else model
        for name, module in model.named_modules():
            if isinstance(module, Quantizer):
                self._handles.append(module.register_forward_pre_hook(self._pre_hook(name)))

    def detach(self) -> None:
        """Remove the pre-hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._where = None

    def _pre_hook(self, name: str):

        def hook(quantizer: Quantizer, inputs: Tuple[torch.Tensor, ...]) -> None:
            if self._where is None:
                return
            x = inputs[0]
            if not bool(torch.isfinite(x).all()):
                nan, inf = _count_non_finite(x)
                raise NonFiniteQuantizerInputError(
                    f'QuantNaNGuardHook: quantizer {name!r} ({type(quantizer).__name__}, '
                    f'{quantizer.bits} bits) received {nan} NaN and {inf} Inf values (of '
                    f'{x.numel()}) at {self._where}')
            for param_name, param in quantizer.named_parameters(recurse=False):
                if not bool(torch.isfinite(param).all()):
                    nan, inf = _count_non_finite(param.detach())
                    raise NonFiniteQuantizerInputError(
                        f'QuantNaNGuardHook: quantizer {name!r} ({type(quantizer).__name__}, '
                        f'{quantizer.bits} bits) has {nan} NaN and {inf} Inf values in its '
                        f'{param_name!r} at {self._where}')

        return hook

    def _start(self, runner, mode: str) -> None:
        if mode in self.modes:
            self.attach(runner.model)
            self._where = f'{mode} start (iteration {runner.iter})'

    def _start_iter(self, runner, mode: str, batch_idx: int) -> None:
        if mode not in self.modes:
            return
        index = runner.iter if mode == 'train' else batch_idx
        if index % self.check_every:
            self._where = None
        elif mode == 'train':
            self._where = f'train iteration {runner.iter}'
        else:
            self._where = f'{mode} batch {batch_idx} (train iteration {runner.iter})'

    def _end_iter(self) -> None:
        self._where = None

    def before_train(self, runner) -> None:
        """Guard the quantizers, also in forward passes before the first iteration."""
        self._start(runner, 'train')

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self._start_iter(runner, 'train', batch_idx)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._end_iter()

    def before_val(self, runner) -> None:
        self._start(runner, 'val')

    def before_val_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self._start_iter(runner, 'val', batch_idx)

    def after_val_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._end_iter()

    def before_test(self, runner) -> None:
        self._start(runner, 'test')

    def before_test_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self._start_iter(runner, 'test', batch_idx)

    def after_test_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._end_iter()

    def after_run(self, runner) -> None:
        """Remove the pre-hooks."""
        self.detach()
