"""LSQ: uniform quantizer with a learned step size (Esser et al., ICLR 2020)."""
import math
from typing import Optional

import torch
from torch import nn

from .bits import integer_range, is_full_precision
from .distributed import sum_over_processes, world_size
from .fake_quantize import fake_quantize
from .quantizer_base import Quantizer


class LSQQuantizer(Quantizer):
    """Learned step size quantizer (LSQ).

    Forward: ``q = clamp(round(x / s), Qn, Qp)``, output ``q * s`` with the learned
    step ``s`` (``self.step``). Backward (see :func:`fake_quantize`): straight-through
    for ``x`` strictly inside the range (zero outside); for ``s``, ``q - x/s``
    strictly inside the range and ``Qn`` / ``Qp`` at or beyond its ends, multiplied
    by ``g = 1 / sqrt(N * Qp)`` if ``grad_scale``. ``N`` is the number of elements
    that share one step: ``x.numel()`` for a per-tensor quantizer (the whole batch
    for activations) and ``x.numel() / C`` per channel.

    Activation quantizers (``batch_split=True``, as :meth:`for_activations` builds
    them) see a batch that DDP splits over processes. For them ``N`` counts the
    global batch (``x.numel()`` times the number of processes, exact when the
    processes' batches have one size) and the first-batch ``mean(|x|)`` is that of
    all processes' batches together, so that ``k`` processes train like one with a
    ``k`` times larger batch. Weights are the same on every process
    and need neither.

    The step is initialised on the first forward to ``2 * mean(|x|) / sqrt(Qp)``
    (per channel for per-channel steps) unless the ``initialized`` buffer is set,
    e.g. by loading a state dict. The step is used as ``max(step, min_step)`` with a
    straight-through gradient, so it stays strictly positive without ever getting
    stuck at the bound.

    Args:
        bits (int): Bit width: 2..8, or 32 for full precision (identity).
        signed (bool): Codes ``-2^(b-1)..2^(b-1)-1`` if True, else ``0..2^b-1``.
        per_channel (bool): One step per channel of dim 0. Defaults to False.
        num_channels (int): Size of dim 0; used only if ``per_channel``. Defaults to 1.
        grad_scale (bool): Scale the step gradient by ``g``. Defaults to True.
        min_step (float): Smallest step used in the forward pass. Defaults to 1e-8.
        batch_split (bool): The input is a batch split over DDP processes (see
            above). Defaults to False.
        name (str, optional): How errors name this quantizer. Defaults to the class name.
    """

    def __init__(self,
                 bits: int,
                 signed: bool,
                 *,
                 per_channel: bool = False,
                 num_channels: int = 1,
                 grad_scale: bool = True,
                 min_step: float = 1e-8,
                 batch_split: bool = False,
                 name: Optional[str] = None) -> None:
        super().__init__(bits, signed, per_channel=per_channel, num_channels=num_channels,
                         name=name)
        self.grad_scale = grad_scale
        self.min_step = min_step
        self.batch_split = batch_split
        self.step = nn.Parameter(torch.ones(self.num_scales))
        self.register_buffer('initialized', torch.tensor(False))
        #: How :meth:`set_bits` rescales the step: ``'range'`` or ``'lsq'``.
        self.step_rescale = 'range'

    def _bits_changed(self, old_bits: int, new_bits: int) -> None:
        """Rescale the step when the bit width changes, by :attr:`step_rescale`.

        ``'range'`` keeps the clipping range ``step * Qp``: the step is multiplied by
        ``Qp_old / Qp_new`` (``(2^old - 1) / (2^new - 1)`` for unsigned codes,
        ``(2^(old-1) - 1) / (2^(new-1) - 1)`` for signed ones; the AQD reference
        code's rule). ``'lsq'`` multiplies it by ``sqrt(Qp_old / Qp_new)``, the ratio
        of LSQ's initial steps ``2 * mean|x| / sqrt(Qp)`` for the same data. Switching
        to or from 32 bits leaves the step as it is.
        """
        if is_full_precision(old_bits) or is_full_precision(new_bits):
            return
        ratio = integer_range(old_bits, self.signed)[1] / integer_range(new_bits, self.signed)[1]
        with torch.no_grad():
            self.step.mul_(ratio if self.step_rescale == 'range' else math.sqrt(ratio))

    @classmethod
    def for_activations(cls, bits: int, signed: bool, name: str) -> 'LSQQuantizer':
        """Build a per-tensor activation quantizer (``batch_split=True``).

        Args:
            bits (int): Bit width.
            signed (bool): Signed codes.
            name (str): Name used in errors.

        Returns:
            LSQQuantizer: The activation quantizer.
        """
        return cls(bits, signed, batch_split=True, name=name)

    @torch.no_grad()
    def init_step(self, x: torch.Tensor) -> None:
        """Set the step from data: ``2 * mean(|x|) / sqrt(Qp)``.

        For ``batch_split`` quantizers under DDP, ``mean(|x|)`` is taken over all
        processes' batches, so that every rank starts from the same step (a learned
        parameter: DDP synchronises its gradients, not its value). Every rank must
        reach this call, as it does when the first training forward initialises the
        quantizers.

        Args:
            x (Tensor): A representative input (per-channel: dim 0 is the channel dim).
        """
        _, qp = self.code_range
        flat = x.detach().abs().reshape(x.shape[0], -1) if self.per_channel else \
            x.detach().abs().reshape(1, -1)
        totals = torch.cat([flat.sum(1), flat.new_tensor([flat.shape[1]])])
        if self.batch_split:  # the mean |x| of all processes' batches together
            totals = sum_over_processes(totals)
        mean_abs = totals[:-1] / totals[-1]
        self.step.copy_((2 * mean_abs / math.sqrt(qp)).clamp_min(self.min_step))
        self.initialized.fill_(True)

    def _gradient_scale(self, x: torch.Tensor) -> float:
        if not self.grad_scale:
            return 1.0
        _, qp = self.code_range
        # Under DDP, N is this process's numel times the process count: the global
        # batch's when the processes' batches have one size (mmdet pads per process).
        processes = world_size() if self.batch_split else 1
        return 1.0 / math.sqrt(x.numel() * processes / self.num_scales * qp)

    def _fake_quantize(self, x: torch.Tensor) -> torch.Tensor:
        if not self.initialized:
            self.init_step(x)
        qn, qp = self.code_range
        return fake_quantize(x, self.step, qn, qp, self._gradient_scale(x), self.min_step,
                             self.round_half_up)

    def get_scale(self) -> torch.Tensor:
        """The step in use (``max(step, min_step)``).

        Returns:
            Tensor: Detached step of shape ``(1,)`` or ``(num_channels,)``.
        """
        self._check_enabled()
        return self.step.detach().clamp_min(self.min_step)

    @torch.no_grad()
    def set_scale(self, scale: torch.Tensor) -> None:
        """Set the step (at least ``min_step``) and mark the quantizer initialised.

        Args:
            scale (Tensor): Step of shape ``(1,)`` or ``(num_channels,)``.
        """
        self.step.copy_(torch.as_tensor(scale, dtype=self.step.dtype).reshape(
            self.step.shape).clamp_min(self.min_step))
        self.initialized.fill_(True)

    def integer_codes(self, x: torch.Tensor) -> torch.Tensor:
        """The codes ``clamp(round(x / s), Qn, Qp)``.

        Args:
            x (Tensor): Input.

        Returns:
            Tensor: int32 codes; ``codes * get_scale()`` (broadcast along dim 0 for
            per-channel steps) equals ``forward(x)``.
        """
        self._check_enabled()
        qn, qp = self.code_range
        scale = self._channel_view(self.get_scale(), x.dim())
        return (x.detach() / scale).clamp(qn, qp).round().to(torch.int32)

    def extra_repr(self) -> str:
        return (f'{super().extra_repr()}, grad_scale={self.grad_scale}, '
                f'batch_split={self.batch_split}')
