"""Initialise quantizer scales from the statistics of a few batches."""
import math
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from .quantizer_base import Quantizer

#: Calibration rules: how a scale follows from the statistics of ``x``.
RULES = ('mean', 'max', 'percentile', 'mse')
#: Candidate scales of the ``'mse'`` rule: ``k / MSE_CANDIDATES * max|x| / Qp``, k = 1..N.
MSE_CANDIDATES = 100

#: ``reduce(tensor, op)`` with op ``'sum'`` or ``'max'``; returns the reduced tensor.
ReduceFn = Callable[[torch.Tensor, str], torch.Tensor]


def check_rule(rule: object, what: str) -> str:
    """Return ``rule`` if it is one of :data:`RULES`, else raise naming it."""
    if rule not in RULES:
        raise ValueError(f'{what}={rule!r} is invalid; expected one of {RULES}')
    return rule  # type: ignore[return-value]


def _thin(rows: torch.Tensor, max_samples: int) -> torch.Tensor:
    """Every k-th column of ``rows``, k the smallest stride leaving at most ``max_samples``."""
    if rows.shape[1] <= max_samples:
        return rows
    return rows[:, ::math.ceil(rows.shape[1] / max_samples)]


def mse_scale(rows: torch.Tensor, qn: int, qp: int,
              candidates: int = MSE_CANDIDATES) -> torch.Tensor:
    """The scale of each row that minimises ``sum((clamp(round(x / s), Qn, Qp) * s - x)^2)``.

    The search is over ``s = k / candidates * max|x| / Qp`` for ``k = 1..candidates``
    (the largest candidate leaves the largest magnitude unclipped on the positive
    side); the smallest ``s`` wins a tie. A row of zeros gets the smallest candidate
    of a row whose maximum is 1.

    Args:
        rows (Tensor): Samples, shape ``(rows, n)``: one row per scale.
        qn (int): Smallest integer code.
        qp (int): Largest integer code.
        candidates (int): Number of candidate scales. Defaults to :data:`MSE_CANDIDATES`.

    Returns:
        Tensor: float64 scales of shape ``(rows,)``.
    """
    rows = rows.double()
    top = rows.abs().amax(1)
    top = torch.where(top > 0, top, torch.ones_like(top)) / qp
    best_err = torch.full_like(top, math.inf)
    best = top.clone()
    for k in range(1, candidates + 1):
        s = (top * k / candidates).unsqueeze(1)
        err = ((rows / s).round().clamp(qn, qp) * s - rows).square().sum(1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best = torch.where(better, s.squeeze(1), best)
    return best


class _Statistics:
    """Running statistics of ``x`` for one quantizer (per channel for per-channel steps)."""

    def __init__(self) -> None:
        self.abs_sum: Optional[torch.Tensor] = None
        self.count = torch.zeros(1, dtype=torch.float64)
        self.abs_max: Optional[torch.Tensor] = None
        self.percentile_sum: Optional[torch.Tensor] = None
        self.batches = torch.zeros(1, dtype=torch.float64)
        #: Signed samples of ``x`` for the ``'mse'`` rule, shape ``(rows, n)``.
        self.samples: Optional[torch.Tensor] = None

    def update(self, x: torch.Tensor, per_channel: bool, percentile: Optional[float],
               max_samples: int, mse_samples: Optional[int] = None) -> None:
        a = x.detach().double()
        a = a.reshape(a.shape[0], -1) if per_channel else a.reshape(1, -1)
        if mse_samples is not None:
            # Thinned to at most mse_samples columns per batch, and again after joining.
            batch = _thin(a, mse_samples).cpu()
            joined = batch if self.samples is None else torch.cat([self.samples, batch], 1)
            self.samples = _thin(joined, mse_samples)
        a = a.abs()
        abs_sum, abs_max = a.sum(1).cpu(), a.amax(1).cpu()
        self.abs_sum = abs_sum if self.abs_sum is None else self.abs_sum + abs_sum
        self.abs_max = abs_max if self.abs_max is None else torch.maximum(self.abs_max, abs_max)
        self.count += a.shape[1]
        self.batches += 1
        if percentile is not None:
            # torch.quantile has an input-size limit
            value = torch.quantile(_thin(a, max_samples), percentile / 100, dim=1).cpu()
            self.percentile_sum = (value if self.percentile_sum is None else
                                   self.percentile_sum + value)

    def reduce(self, reduce_fn: ReduceFn) -> None:
        self.abs_sum = reduce_fn(self.abs_sum, 'sum')
        self.count = reduce_fn(self.count, 'sum')
        self.abs_max = reduce_fn(self.abs_max, 'max')
        self.batches = reduce_fn(self.batches, 'sum')
        if self.percentile_sum is not None:
            self.percentile_sum = reduce_fn(self.percentile_sum, 'sum')


class ScaleCalibrator:
    """Sets the scales of chosen quantizers from ``|x|`` statistics over batches.

    While attached, a forward pre-hook on each quantizer accumulates the
    statistics of what it quantizes (:meth:`Quantizer.calibration_input`) and
    sets its scale from everything seen so far, so a quantizer never initialises
    itself from one batch and later layers see inputs quantized with the current
    estimates (as in LSQ's sequential first-batch initialisation). :meth:`finish`
    optionally reduces the statistics across processes and sets the final scales.

    Rules, with ``Qp`` the largest code of the quantizer:

    - ``'mean'`` (LSQ): ``2 * mean(|x|) / sqrt(Qp)``.
    - ``'max'`` (AQD reference code for 8-bit first/last layers):
      ``max_fraction * max(|x|) / Qp``.
    - ``'percentile'``: ``percentile(|x|, p) / Qp``, averaged over batches.
    - ``'mse'``: the scale that minimises the squared quantization error of a sample
      of the inputs seen (:func:`mse_scale`; the quantizer's own code range, so
      the asymmetric signed range counts). At 2 bits LSQ's ``'mean'`` rule puts
      the step of a Gaussian weight at 1.6 standard deviations and sets 58% of the
      weights to 0; the error-minimising step is smaller. Under DDP each process
      searches its own sample and the processes' scales are averaged.

    Per-channel quantizers get per-channel statistics (along dim 0).

    Args:
        quantizers (dict[str, Quantizer]): The quantizers to calibrate, by name.
        rule (str): Rule for every quantizer. Defaults to ``'mean'``.
        eight_bit_rule (str, optional): Rule for 8-bit quantizers instead of
            ``rule``. Defaults to ``'max'``.
        max_fraction (float): Fraction of the maximum used by ``'max'``. Defaults to 0.8.
        percentile (float): Percentile used by ``'percentile'``, in (0, 100].
            Defaults to 99.99.
        max_samples (int): Per-batch sample size for percentiles. Defaults to 2**20.
        mse_samples (int): Samples per scale kept for the ``'mse'`` rule. Defaults
            to 2**16.
    """

    def __init__(self,
                 quantizers: Dict[str, Quantizer],
                 rule: str = 'mean',
                 eight_bit_rule: Optional[str] = 'max',
                 max_fraction: float = 0.8,
                 percentile: float = 99.99,
                 max_samples: int = 2**20,
                 mse_samples: int = 2**16) -> None:
        self.rule = check_rule(rule, 'rule')
        self.eight_bit_rule = (None if eight_bit_rule is None else
                               check_rule(eight_bit_rule, 'eight_bit_rule'))
        if not 0 < max_fraction <= 1:
            raise ValueError(f'max_fraction={max_fraction!r} is invalid; expected (0, 1]')
        if not 0 < percentile <= 100:
            raise ValueError(f'percentile={percentile!r} is invalid; expected (0, 100]')
        for name, quantizer in quantizers.items():
            if not quantizer.enabled:
                raise ValueError(f'ScaleCalibrator: quantizer {name!r} is at '
                                 f'{quantizer.bits} bits and has no scale to calibrate')
        self.quantizers = dict(quantizers)
        self.max_fraction = max_fraction
        self.percentile = percentile
        self.max_samples = max_samples
        self.mse_samples = mse_samples
        self.stats: Dict[str, _Statistics] = {name: _Statistics() for name in quantizers}
        self._handles: List[torch.utils.hooks.RemovableHandle] = []

    def rule_of(self, quantizer: Quantizer) -> str:
        """The rule used for ``quantizer`` (depends on its bit width)."""
        if quantizer.bits == 8 and self.eight_bit_rule is not None:
            return self.eight_bit_rule
        return self.rule

    def attach(self) -> 'ScaleCalibrator':
        """Start collecting statistics on every forward of the quantizers.

        Returns:
            ScaleCalibrator: self.
        """
        for name, quantizer in self.quantizers.items():
            self._handles.append(quantizer.register_forward_pre_hook(self._pre_hook(name)))
        return self

    def detach(self) -> None:
        """Stop collecting statistics."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __enter__(self) -> 'ScaleCalibrator':
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()

    def _pre_hook(self, name: str):
        def hook(quantizer: nn.Module, inputs: Tuple[torch.Tensor, ...]) -> None:
            x = quantizer.calibration_input(inputs[0])
            rule = self.rule_of(quantizer)
            self.stats[name].update(x, quantizer.per_channel,
                                    self.percentile if rule == 'percentile' else None,
                                    self.max_samples,
                                    self.mse_samples if rule == 'mse' else None)
            quantizer.set_scale(self.scale_of(name))

        return hook

    def scale_of(self, name: str) -> torch.Tensor:
        """The scale of quantizer ``name`` from its statistics so far.

        Args:
            name (str): Quantizer name.

        Returns:
            Tensor: float32 scale of shape ``(1,)`` or ``(num_channels,)``.
        """
        quantizer, stats = self.quantizers[name], self.stats[name]
        if stats.abs_sum is None:
            raise RuntimeError(f'ScaleCalibrator: quantizer {name!r} saw no input during '
                               f'calibration (is it used by the forward pass?)')
        _, qp = quantizer.code_range
        rule = self.rule_of(quantizer)
        if rule == 'mean':
            scale = 2 * (stats.abs_sum / stats.count) / math.sqrt(qp)
        elif rule == 'max':
            scale = self.max_fraction * stats.abs_max / qp
        elif rule == 'percentile':
            scale = stats.percentile_sum / stats.batches / qp
        else:
            scale = mse_scale(stats.samples, *quantizer.code_range)
        return scale.float()

    def finish(self, reduce_fn: Optional[ReduceFn] = None) -> Dict[str, torch.Tensor]:
        """Detach, reduce the statistics across processes and set the final scales.

        Args:
            reduce_fn (callable, optional): ``reduce_fn(tensor, op)`` with op
                ``'sum'`` or ``'max'``, e.g. an all-reduce, so that every process
                gets identical scales. None for a single process.

        Returns:
            dict[str, Tensor]: The scale set for each quantizer.
        """
        self.detach()
        scales = {}
        processes = None
        for name, quantizer in self.quantizers.items():
            if reduce_fn is None or self.stats[name].abs_sum is None:
                scales[name] = self.scale_of(name)
            elif self.rule_of(quantizer) == 'mse':
                # samples do not add up across processes: average their scales
                if processes is None:
                    processes = reduce_fn(torch.ones(1, dtype=torch.float64), 'sum')
                scale = reduce_fn(self.scale_of(name).double(), 'sum') / processes
                scales[name] = scale.float()
            else:
                self.stats[name].reduce(reduce_fn)
                scales[name] = self.scale_of(name)
            quantizer.set_scale(scales[name])
        return scales
