"""Initialise the scales of uninitialised quantizers from a few batches."""
from typing import Dict, Optional

import torch
from mmengine.dist import all_reduce, is_distributed
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmdet.registry import HOOKS
from torch import nn

from mmaqd.quant import Quantizer
from mmaqd.quant.calibration import ScaleCalibrator, check_rule


def quantizers_to_calibrate(model: nn.Module, force: bool = False) -> Dict[str, Quantizer]:
    """The enabled quantizers of ``model`` whose scales are still to be set from data.

    A quantizer qualifies if it is enabled (fewer than 32 bits), has a settable
    scale, and either ``force`` is set or it has an ``initialized`` flag that is
    False (LSQ). Min-max quantizers observe their ranges themselves and never
    qualify; the Clip variant starts from its reference initialisation and
    qualifies only with ``force``.

    Args:
        model (nn.Module): The model.
        force (bool): Also recalibrate initialised quantizers. Defaults to False.

    Returns:
        dict[str, Quantizer]: The quantizers by module name.
    """
    found = {}
    for name, module in model.named_modules():
        if not isinstance(module, Quantizer) or not module.enabled:
            continue
        if type(module).set_scale is Quantizer.set_scale:
            continue
        initialized = getattr(module, 'initialized', None)
        if force or (initialized is not None and not bool(initialized)):
            found[name] = module
    return found


def _all_reduce(tensor: torch.Tensor, op: str) -> torch.Tensor:
    tensor = tensor.clone()
    all_reduce(tensor, op=op)
    return tensor


@HOOKS.register_module()
class QuantCalibrationHook(Hook):
    """Calibrate quantizer scales before training (and before testing).

    Before training, and before testing a model whose quantizers were never
    initialised, the hook runs ``num_batches`` batches through the model in eval
    mode without gradients and sets the scale of every uninitialised quantizer
    (see :func:`quantizers_to_calibrate`) with :class:`ScaleCalibrator`'s rules.
    A resumed run has initialised quantizers and is left alone. Under DDP the
    statistics are reduced across ranks, so every rank starts identical.

    Batches come from a separate loader built from the config's
    ``train_dataloader`` (its annotations are not used); a test run without one
    falls back to the test dataloader.

    Args:
        num_batches (int): Batches to run. Defaults to 4.
        rule (str): ``'mean'`` (LSQ), ``'max'``, ``'percentile'`` or ``'mse'`` (the
            scale with the least squared quantization error). Defaults to ``'mean'``.
        eight_bit_rule (str, optional): Rule for 8-bit quantizers (the first and
            last layers). Defaults to ``'max'``, the reference code's 0.8 x max.
        max_fraction (float): Fraction of the maximum for ``'max'``. Defaults to 0.8.
        percentile (float): Percentile for ``'percentile'``. Defaults to 99.99.
        force (bool): Recalibrate initialised quantizers too. Defaults to False.
        before_test (bool): Also calibrate before testing. Defaults to True.
    """

    priority = 'HIGH'

    def __init__(self,
                 num_batches: int = 4,
                 rule: str = 'mean',
                 eight_bit_rule: Optional[str] = 'max',
                 max_fraction: float = 0.8,
                 percentile: float = 99.99,
                 force: bool = False,
                 before_test: bool = True) -> None:
        if isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 1:
            raise ValueError(f'QuantCalibrationHook: num_batches={num_batches!r} is invalid; '
                             f'expected an int >= 1')
        check_rule(rule, 'QuantCalibrationHook: rule')
        if eight_bit_rule is not None:
            check_rule(eight_bit_rule, 'QuantCalibrationHook: eight_bit_rule')
        # Checked here too, so that a bad value fails at construction.
        ScaleCalibrator({}, rule, eight_bit_rule, max_fraction, percentile)
        self.num_batches = num_batches
        self.calibrator_args = dict(rule=rule, eight_bit_rule=eight_bit_rule,
                                    max_fraction=max_fraction, percentile=percentile)
        self.force = force
        self.calibrate_before_test = before_test
        self.calibrated = False

    def before_train(self, runner) -> None:
        """Calibrate with batches of a separate loader over the train set.

        The train loop's own loader is not touched: iterating it here would reset its
        (persistent) iterator and shift the data order of training and of resumes.
        """
        if not quantizers_to_calibrate(self._model(runner), self.force):
            runner.logger.info('QuantCalibrationHook: every quantizer is initialised; '
                               'nothing to calibrate')
            return
        self.calibrate(runner, self._train_loader(runner), 'train')

    @staticmethod
    def _model(runner):
        return runner.model.module if is_model_wrapper(runner.model) else runner.model

    @staticmethod
    def _train_loader(runner):
        loader_cfg = dict(runner.cfg.get('train_dataloader') or {})
        if not loader_cfg:
            return runner.train_dataloader
        loader_cfg['persistent_workers'] = False
        return runner.build_dataloader(loader_cfg)

    def before_test(self, runner) -> None:
        """Calibrate a model whose quantizers were never initialised."""
        if not self.calibrate_before_test:
            return
        if not quantizers_to_calibrate(self._model(runner), self.force):
            return
        if runner.cfg.get('train_dataloader'):
            self.calibrate(runner, self._train_loader(runner), 'train')
        else:
            self.calibrate(runner, runner.test_dataloader, 'test')

    def calibrate(self, runner, dataloader, split: str) -> Dict[str, torch.Tensor]:
        """Run the calibration batches and set the scales.

        Args:
            runner (Runner): The runner.
            dataloader (Iterable): Source of batches.
            split (str): Which split the batches come from (for the log).

        Returns:
            dict[str, Tensor]: The scale set for each calibrated quantizer.
        """
        model = self._model(runner)
        targets = quantizers_to_calibrate(model, self.force)
        if not targets:
            runner.logger.info('QuantCalibrationHook: every quantizer is initialised; '
                               'nothing to calibrate')
            return {}
        calibrator = ScaleCalibrator(targets, **self.calibrator_args)
        was_training = model.training
        model.eval()
        seen = 0
        with torch.no_grad(), calibrator:
            for data in dataloader:
                data = model.data_preprocessor(data, False)
                model(**data, mode='tensor')
                seen += 1
                if seen == self.num_batches:
                    break
        scales = calibrator.finish(_all_reduce if is_distributed() else None)
        model.train(was_training)
        self.calibrated = True
        runner.logger.info(
            f'QuantCalibrationHook: set the scales of {len(scales)} quantizers from '
            f'{seen} {split} batches (rule {self.calibrator_args["rule"]!r}, 8-bit rule '
            f'{self.calibrator_args["eight_bit_rule"]!r})')
        return scales
