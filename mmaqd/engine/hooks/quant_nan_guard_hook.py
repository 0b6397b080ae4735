"""Stop at the first NaN / Inf in a quantizer's input or a module's output, naming it."""
from typing import Any, Iterator, List, Optional, Sequence, Tuple

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


def _describe(name: str, quantizer: Quantizer) -> str:
    return f'quantizer {name!r} ({type(quantizer).__name__}, {quantizer.bits} bits)'


class NonFiniteOutputError(FloatingPointError):
    """A module (a layer, a head's last conv, a loss) produced NaN or Inf values."""


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    """The floating-point tensors in a module output (nested tuples, lists, dicts)."""
    if isinstance(value, torch.Tensor):
        if value.is_floating_point():
            yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


def _non_finite(x: torch.Tensor) -> Optional[str]:
    """None for a finite ``x``, else ``'N NaN and M Inf values (of K)'``."""
    x = x.detach()
    if bool(torch.isfinite(x).all()):
        return None
    return (f'{int(torch.isnan(x).sum())} NaN and {int(torch.isinf(x).sum())} Inf values '
            f'(of {x.numel()})')


@HOOKS.register_module()
class QuantNaNGuardHook(Hook):
    """Raise at the first non-finite tensor in the model's forward pass.

    A NaN or Inf fed to a fake quantizer is rounded and clamped into plausible
    looking codes or spreads silently through the scale gradient, so a diverged
    run can go on for many iterations before the loss shows it; one after the last
    quantizer (a head's final conv, a loss) ends in a NaN loss or in a test at
    mAP 0. This hook adds a forward pre-hook to every
    :class:`~mmaqd.quant.Quantizer` of the model (the input quantizers see
    activations, the weight quantizers the weights) that checks its input and its
    own learned scale with ``torch.isfinite`` and raises
    :class:`NonFiniteQuantizerInputError`, and a forward hook to every other leaf
    module (convs, norms, activations, the losses) that checks its outputs and
    raises :class:`NonFiniteOutputError`. Both are ``FloatingPointError`` subclasses and
    name the module, the iteration and the numbers of NaN and Inf values. Checks
    run in forward order, so the first module named is the first whose input or
    output went bad; a NaN gradient shows up at the next iteration, in the
    weights it was applied to. After a training iteration the logged losses are
    checked too.

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
            elif not any(True for _ in module.children()):
                self._handles.append(module.register_forward_hook(self._output_hook(name)))

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
            found = _non_finite(inputs[0])
            if found:
                raise NonFiniteQuantizerInputError(
                    f'QuantNaNGuardHook: {_describe(name, quantizer)} received {found} at '
                    f'{self._where}')
            for param_name, param in quantizer.named_parameters(recurse=False):
                found = _non_finite(param)
                if found:
                    raise NonFiniteQuantizerInputError(
                        f'QuantNaNGuardHook: {_describe(name, quantizer)} has {found} in its '
                        f'{param_name!r} at {self._where}')

        return hook

    def _output_hook(self, name: str):

        def hook(module: nn.Module, inputs: Tuple[Any, ...], output: Any) -> None:
            if self._where is None:
                return
            for k, x in enumerate(_tensors(output)):
                found = _non_finite(x)
                if found:
                    raise NonFiniteOutputError(
                        f'QuantNaNGuardHook: module {name!r} ({type(module).__name__}) output '
                        f'{k} has {found} at {self._where}; it is the first module whose '
                        f'output is not finite')

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
        """Check the logged losses (a NaN the forward checks did not see)."""
        where = self._where
        self._end_iter()
        if where is None or not isinstance(outputs, dict):
            return
        for key, value in outputs.items():
            if isinstance(value, torch.Tensor) and not bool(torch.isfinite(value).all()):
                raise NonFiniteOutputError(f'QuantNaNGuardHook: {key} = {value.tolist()} at '
                                           f'{where}')

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
