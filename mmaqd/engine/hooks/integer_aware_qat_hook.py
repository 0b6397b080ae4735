"""Integer-aware QAT: train and evaluate the fake-quant model in the engine's arithmetic."""
from typing import Optional, Set

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmdet.registry import HOOKS

from mmaqd.integer import ConversionError
from mmaqd.integer.simulation import sync_engine_units
from mmaqd.quant import set_integer_aware


@HOOKS.register_module()
class IntegerAwareQATHook(Hook):
    """Make the fake-quant model compute what the integer engine computes.

    At the start of a run the model's quantized layers are switched to the
    engine's arithmetic (:func:`~mmaqd.quant.set_integer_aware`): BN and conv
    biases on the accumulator grid, adds aligned with the engine's fixed-point
    ratios, requantization rounded half up, all with straight-through gradients.
    Before every ``interval``-th training iteration and before each validation
    or test, the units that arithmetic needs are taken from a conversion of the
    model (:func:`~mmaqd.integer.simulation.sync_engine_units`); they follow the
    learned scales and BN statistics. In eval mode the model then outputs the
    engine's integers times their units.

    Until every quantizer has a scale (LSQ takes it from its first batch) the
    layers compute as plain fake quantization. A model that cannot be converted
    (a GroupNorm head; a BN whose gamma is so close to 0 that its integer bias
    would overflow) is reported once per reason as a warning, and its layers
    compute as plain fake quantization until a conversion succeeds again (units
    of an earlier conversion would not match the scales learned since).

    Args:
        interval (int): Training iterations between two unit updates. Defaults to 1.
    """

    priority = 'LOW'  # after QuantCalibrationHook and BitWidthScheduleHook

    def __init__(self, interval: int = 1) -> None:
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f'IntegerAwareQATHook: interval must be a positive int, got '
                             f'{interval!r}')
        self.interval = interval
        self.last_counts: Optional[dict] = None
        self._warned: Set[str] = set()

    @staticmethod
    def _model(runner):
        return runner.model.module if is_model_wrapper(runner.model) else runner.model

    def _switch_on(self, runner) -> None:
        counts = set_integer_aware(self._model(runner), True)
        runner.logger.info(f'IntegerAwareQATHook: integer-aware layers: {counts}')

    def _sync(self, runner) -> None:
        try:
            self.last_counts = sync_engine_units(self._model(runner))
        except ConversionError as err:
            # e.g. a GN head, or a BN gamma so close to 0 that its folded bias would
            # overflow the accumulator: plain fake quantization until it converts again
            model = self._model(runner)
            set_integer_aware(model, False)  # clears the units
            set_integer_aware(model, True)
            self.last_counts = None
            message = str(err)
            if message not in self._warned:
                self._warned.add(message)
                runner.logger.warning(
                    f'IntegerAwareQATHook: no integer form at iteration {runner.iter} '
                    f'({message}); the layers compute as plain fake quantization until '
                    f'a conversion succeeds. Remove the hook from custom_hooks for a model '
                    f'that has no integer form.')

    def before_train(self, runner) -> None:
        """Switch the layers to the engine's arithmetic."""
        self._switch_on(runner)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        """Take the engine's units from the current scales and statistics."""
        if runner.iter % self.interval == 0:
            self._sync(runner)

    def before_val_epoch(self, runner) -> None:
        """Units from the running statistics, for an exact eval-mode forward."""
        self._switch_on(runner)
        self._sync(runner)

    def before_test_epoch(self, runner) -> None:
        """As :meth:`before_val_epoch`."""
        self.before_val_epoch(runner)
