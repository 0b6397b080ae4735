"""Change bit widths during training (progressive quantization)."""
import re
from typing import Dict, List, Optional, Sequence

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmdet.registry import HOOKS
from torch import nn

from mmaqd.quant import QConv, Quantizer, check_bits, is_full_precision

#: Checkpoint key under which the hooks keep their state.
CHECKPOINT_KEY = 'aqd_bit_schedules'
_ENTRY_KEYS = {'begin', 'bits', 'w_bits', 'a_bits'}


def _check_schedule(schedule: Sequence[dict]) -> List[dict]:
    """Validate a schedule; return it as ``[{begin, w_bits, a_bits}]``."""
    if isinstance(schedule, (str, dict)) or not isinstance(schedule, Sequence) or not schedule:
        raise ValueError(f'BitWidthScheduleHook: schedule must be a non-empty list of dicts, '
                         f'got {schedule!r}')
    entries, previous = [], None
    for k, entry in enumerate(schedule):
        where = f'BitWidthScheduleHook: schedule[{k}] {entry!r}'
        if not isinstance(entry, dict):
            raise ValueError(f'{where}: expected a dict')
        unknown = sorted(set(entry) - _ENTRY_KEYS)
        if unknown:
            raise ValueError(f'{where}: unknown key(s) {unknown}; expected some of '
                             f'{sorted(_ENTRY_KEYS)}')
        begin = entry.get('begin')
        if isinstance(begin, bool) or not isinstance(begin, int) or begin < 0:
            raise ValueError(f'{where}: begin must be an int >= 0, got {begin!r}')
        if previous is not None and begin <= previous:
            raise ValueError(f'{where}: begin={begin} does not increase (previous entry '
                             f'begins at {previous})')
        if 'bits' in entry and ('w_bits' in entry or 'a_bits' in entry):
            raise ValueError(f'{where}: give either bits or w_bits/a_bits, not both')
        w_bits = entry.get('w_bits', entry.get('bits'))
        a_bits = entry.get('a_bits', entry.get('bits'))
        if w_bits is None and a_bits is None:
            raise ValueError(f'{where}: needs bits, w_bits or a_bits')
        entries.append(dict(
            begin=begin,
            w_bits=None if w_bits is None else check_bits(w_bits, f'{where} w_bits'),
            a_bits=None if a_bits is None else check_bits(a_bits, f'{where} a_bits')))
        previous = begin
    return entries


def _compile(pattern: str, what: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except (re.error, TypeError) as err:
        raise ValueError(f'BitWidthScheduleHook: {what} {pattern!r} is not a valid regular '
                         f'expression: {err}') from err


@HOOKS.register_module()
class BitWidthScheduleHook(Hook):
    """Set the bit widths of chosen QConvs by iteration (or epoch).

    ``schedule`` is a list of ``dict(begin=N, bits=B)`` (or ``w_bits`` / ``a_bits``
    separately; a width left out stays as it is) with strictly increasing
    ``begin``: from iteration (epoch) ``begin`` on, every QConv whose module name
    matches ``pattern`` (``re.search``) and none of ``exclude`` gets those bits.
    On a change the LSQ steps are rescaled to keep their clipping range
    (:meth:`Quantizer.set_bits`), the optimizer's state (momentum) of the changed
    quantizers' parameters is reset, and the change is logged. A quantizer that
    leaves 32 bits initialises its scale from its first batch.

    The bits of every QConv and the stage are saved in checkpoints; resuming
    restores them and refuses a checkpoint saved with another schedule. Several
    hooks with different patterns may be combined.

    Args:
        schedule (list[dict]): The stages, e.g. ``[dict(begin=0, bits=8),
            dict(begin=500, bits=4), dict(begin=1000, bits=2)]``.
        pattern (str): Regular expression selecting QConvs by name. Defaults to
            ``''`` (all).
        exclude (sequence[str]): Regular expressions of QConvs to leave alone, e.g.
            the 8-bit first and last layers. Defaults to ().
        by_epoch (bool): ``begin`` counts epochs instead of iterations. Defaults to False.
        reset_momentum (bool): Reset the optimizer state of changed quantizers.
            Defaults to True.
        step_rescale (str): How LSQ steps follow a change: ``'lsq'`` scales them by
            ``sqrt(Qp_old / Qp_new)`` (LSQ's own initial-step ratio), ``'range'`` by
            ``Qp_old / Qp_new`` (same clipping range, the AQD reference code's rule).
            Defaults to ``'lsq'``: measured on RetinaNet-R18, ``'range'`` after an 8-bit
            stage zeroed every weight code of some layers at 3 bits and training
            collapsed.
    """

    priority = 'VERY_HIGH'

    def __init__(self,
                 schedule: Sequence[dict],
                 pattern: str = '',
                 exclude: Sequence[str] = (),
                 by_epoch: bool = False,
                 reset_momentum: bool = True,
                 step_rescale: str = 'lsq') -> None:
        self.schedule = _check_schedule(schedule)
        if step_rescale not in ('lsq', 'range'):
            raise ValueError(f"BitWidthScheduleHook: step_rescale={step_rescale!r} is invalid; "
                             f"expected 'lsq' or 'range'")
        self.step_rescale = step_rescale
        if isinstance(exclude, str):
            exclude = (exclude, )
        self.pattern = _compile(pattern, 'pattern')
        self.exclude = [_compile(p, 'exclude pattern') for p in exclude]
        self.by_epoch = by_epoch
        self.reset_momentum = reset_momentum
        self.stage: Optional[int] = None
        self._convs: Optional[Dict[str, QConv]] = None

    @property
    def key(self) -> str:
        """str: Identifies this hook's state in a checkpoint."""
        return f'pattern={self.pattern.pattern!r} exclude={[p.pattern for p in self.exclude]}'

    def spec(self) -> dict:
        """dict: What must agree between a checkpoint and a resumed run."""
        return dict(schedule=self.schedule, by_epoch=self.by_epoch)

    def selected_convs(self, model: nn.Module) -> Dict[str, QConv]:
        """The QConvs this hook controls, by name.

        Raises:
            ValueError: If ``pattern`` or an ``exclude`` pattern matches no QConv.
        """
        convs = {n: m for n, m in model.named_modules() if isinstance(m, QConv)}
        for regex in self.exclude:
            if not any(regex.search(n) for n in convs):
                raise ValueError(f'BitWidthScheduleHook: exclude pattern {regex.pattern!r} '
                                 f'matches no QConv')
        chosen = {n: m for n, m in convs.items()
                  if self.pattern.search(n) and not any(r.search(n) for r in self.exclude)}
        if not chosen:
            raise ValueError(f'BitWidthScheduleHook: pattern {self.pattern.pattern!r} matches '
                             f'no QConv (after exclusions)')
        return chosen

    def stage_at(self, progress: int) -> Optional[int]:
        """Index of the stage in force at iteration (epoch) ``progress``, or None."""
        stage = None
        for k, entry in enumerate(self.schedule):
            if entry['begin'] <= progress:
                stage = k
        return stage

    @staticmethod
    def _model(runner) -> nn.Module:
        return runner.model.module if is_model_wrapper(runner.model) else runner.model

    def before_run(self, runner) -> None:
        """Check the patterns against the model before any time is spent."""
        self._convs = self.selected_convs(self._model(runner))

    def before_train(self, runner) -> None:
        """Apply the stage of the starting iteration (0, or where a resume starts)."""
        self._update(runner, runner.epoch if self.by_epoch else runner.iter)

    def before_train_epoch(self, runner) -> None:
        if self.by_epoch:
            self._update(runner, runner.epoch)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if not self.by_epoch:
            self._update(runner, runner.iter)

    def _update(self, runner, progress: int) -> None:
        stage = self.stage_at(progress)
        if stage is None or stage == self.stage:
            return
        entry = self.schedule[stage]
        changed, toggled = [], []
        for name, conv in self._convs.items():
            before = [(q, q.bits) for q in conv.modules() if isinstance(q, Quantizer)]
            for q, _ in before:
                if hasattr(q, 'step_rescale'):
                    q.step_rescale = self.step_rescale
            conv.set_bits(w_bits=entry['w_bits'], a_bits=entry['a_bits'])
            changed += [q for q, bits in before if q.bits != bits]
            toggled += [f'{name} ({q.name}: {bits} -> {q.bits} bits)' for q, bits in before
                        if is_full_precision(bits) != is_full_precision(q.bits)]
        if toggled and is_model_wrapper(runner.model):
            raise ValueError(
                f'BitWidthScheduleHook: stage {stage} switches {len(toggled)} quantizers '
                f'between 32 bits and quantized ({"; ".join(toggled[:3])}'
                f'{"; ..." if len(toggled) > 3 else ""}) under {type(runner.model).__name__}. '
                f'A quantizer trains its scale only while it quantizes, and DDP fixes the '
                f'set of trained parameters when it wraps the model: give quant_cfg the bits '
                f'of the first stage and keep every stage below 32 bits, or train in one '
                f'process')
        if self.reset_momentum and changed:
            self._reset_optimizer_state(runner, changed)
        self.stage = stage
        unit = 'epoch' if self.by_epoch else 'iter'
        runner.logger.info(
            f'BitWidthScheduleHook: {unit} {progress}: stage {stage}, {len(self._convs)} QConvs '
            f'matching {self.pattern.pattern!r} -> w_bits={entry["w_bits"]}, '
            f'a_bits={entry["a_bits"]} ({len(changed)} quantizers changed)')

    @staticmethod
    def _reset_optimizer_state(runner, quantizers: List[nn.Module]) -> None:
        optim_wrapper = getattr(runner, 'optim_wrapper', None)
        optimizer = getattr(optim_wrapper, 'optimizer', None)
        if optimizer is None:
            return
        for quantizer in quantizers:
            for param in quantizer.parameters(recurse=False):
                optimizer.state.pop(param, None)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Save the stage and the bits of every QConv this hook controls."""
        bits = {name: [conv.w_bits, conv.a_bits] for name, conv in self._convs.items()}
        checkpoint.setdefault(CHECKPOINT_KEY, {})[self.key] = dict(
            spec=self.spec(), stage=self.stage, bits=bits)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """On resume: restore the stage and the bits (the steps loaded next belong to them).

        Raises:
            ValueError: If the checkpoint was saved without this schedule or with
                another one.
        """
        if not getattr(runner, '_resume', False):
            return  # load_from: the config decides the bits
        saved = checkpoint.get(CHECKPOINT_KEY, {}).get(self.key)
        if saved is None:
            raise ValueError(f'BitWidthScheduleHook: cannot resume: the checkpoint has no '
                             f'bit schedule for {self.key} (it was saved by a run without '
                             f'this schedule)')
        if saved['spec'] != self.spec():
            raise ValueError(f'BitWidthScheduleHook: cannot resume: the checkpoint was saved '
                             f'with bit schedule {saved["spec"]}, this run has {self.spec()}')
        if self._convs is None:
            self._convs = self.selected_convs(self._model(runner))
        if set(saved['bits']) != set(self._convs):
            raise ValueError(f'BitWidthScheduleHook: cannot resume: the checkpoint\'s layers '
                             f'{sorted(set(saved["bits"]) ^ set(self._convs))} differ from '
                             f'this model\'s')
        for name, (w_bits, a_bits) in saved['bits'].items():
            self._convs[name].set_bits(w_bits=w_bits, a_bits=a_bits, adapt=False)
        self.stage = saved['stage']
