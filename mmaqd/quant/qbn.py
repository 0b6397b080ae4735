"""BatchNorm2d that knows its integer (folded) form and can simulate its bias rounding."""
from typing import Optional, Tuple, Union

import torch
from torch import nn

from .bn_fold import FoldedBN, fold_batch_norm, folded_shift


class QBN(nn.BatchNorm2d):
    """BatchNorm2d for quantized networks, usable as mmcv ``norm_cfg``.

    By default it is a plain float BN. With ``simulate_bias_rounding`` and an
    input unit set by :meth:`set_input_unit`, it computes BN in the folded form the
    integer engine uses, ``g' * (y + S * round((beta / g' - mu) / S))``, with a
    straight-through rounding, so that training sees the rounded bias that
    inference adds. In training ``mu`` and ``g'`` come from the batch statistics
    (and the running statistics are updated as in BatchNorm2d), in eval mode from
    the running ones. ``gamma`` near 0 makes ``beta / g'`` large; that is the
    integer form's own limitation, not the simulation's.

    A conv with its own bias ``b`` before the BN adds ``b`` on its accumulator grid
    in integer-aware mode, while the engine folds ``b`` into the BN's one integer
    bias, ``round((beta / g' - mu + b) / S)``: given ``b`` by :meth:`set_input_unit`,
    the BN takes the conv's rounded ``b`` back out and adds that bias instead, so
    that the two roundings are the engine's one.

    The input unit and conv bias are not saved in the state dict: they follow the
    learned parameters of the preceding conv and have to be set again (e.g. by a
    hook) as they change.

    Args:
        num_features, eps, momentum, affine, track_running_stats, device, dtype: As
            for :class:`torch.nn.BatchNorm2d`.
        simulate_bias_rounding (bool): Round the folded bias once an input unit is
            set. Defaults to False.
    """

    _abbr_ = 'bn'

    def __init__(self,
                 num_features: int,
                 eps: float = 1e-5,
                 momentum: Optional[float] = 0.1,
                 affine: bool = True,
                 track_running_stats: bool = True,
                 device=None,
                 dtype=None,
                 *,
                 simulate_bias_rounding: bool = False) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)
        self.simulate_bias_rounding = simulate_bias_rounding
        self.register_buffer('input_unit', None, persistent=False)
        self.register_buffer('conv_bias', None, persistent=False)

    def set_input_unit(self, unit: Union[torch.Tensor, float, None],
                       conv_bias: Optional[torch.Tensor] = None) -> None:
        """Set (or clear, with None) the accumulator unit ``S = s_x * s_w`` of the input.

        Args:
            unit (Tensor | float | None): Scalar, shape (1,) or per-channel shape (C,).
            conv_bias (Tensor, optional): The float bias ``b`` of the conv before this
                BN, shape (C,), which the engine folds into this BN's integer bias.
                Defaults to None (a conv without bias).
        """
        if unit is None:
            self.input_unit = None
            self.conv_bias = None
            return
        unit = torch.as_tensor(unit, dtype=torch.float64).detach().reshape(-1)
        if unit.numel() not in (1, self.num_features) or not (unit > 0).all():
            raise ValueError(f'{type(self).__name__}: the input unit must be positive with 1 '
                             f'or {self.num_features} elements, got {unit.tolist()}')
        device = self.running_mean.device if self.running_mean is not None else unit.device
        if conv_bias is not None:
            # a float64 copy, as the engine folds it (set again with the units when the
            # conv bias trains on)
            conv_bias = torch.as_tensor(conv_bias).detach().to(torch.float64).reshape(-1)
            if conv_bias.numel() != self.num_features:
                raise ValueError(f'{type(self).__name__}: the conv bias must have '
                                 f'{self.num_features} elements, got {conv_bias.numel()}')
            conv_bias = conv_bias.to(device)
        self.input_unit = unit.to(device)
        self.conv_bias = conv_bias

    def _affine(self, like: torch.Tensor):
        if self.affine:
            return self.weight, self.bias
        return torch.ones_like(like), torch.zeros_like(like)

    @torch.no_grad()
    def fold(self, input_unit: Union[torch.Tensor, float],
             weight_unit: Union[torch.Tensor, float]) -> FoldedBN:
        """The integer bias and real multiplier of this BN for the given units.

        Uses the running statistics (the inference form) and the conv bias given to
        :meth:`set_input_unit`, if any, in float64, with the integer conversion's own
        fold (:func:`~mmaqd.quant.bn_fold.fold_batch_norm`).

        Args:
            input_unit (Tensor | float): Input quantizer scale ``s_x``.
            weight_unit (Tensor | float): Weight quantizer scale ``s_w``, scalar or
                per output channel.

        Returns:
            FoldedBN: ``bias = round((beta / g' - mu + b) / S)`` (int64), ``multiplier =
            g'`` and ``unit = S = s_x * s_w`` (float64); no constant channels.

        Raises:
            ValueError: A channel with ``g' = 0`` (its output is ``beta`` whatever the
                input: no folded form) or a bias past int64, naming the channel.
        """
        unit = (torch.as_tensor(input_unit, dtype=torch.float64) *
                torch.as_tensor(weight_unit, dtype=torch.float64))
        folded = fold_batch_norm(self, unit, self.conv_bias)
        if folded.constant.any():
            channel = int(torch.nonzero(folded.constant)[0])
            beta = float(self.bias[channel]) if self.affine else 0.0
            raise ValueError(f'{type(self).__name__} channel {channel}: gamma is 0, so the '
                             f'BN outputs beta ({beta:.3g}) whatever its input and has no '
                             f'folded form')
        return folded

    def batch_moments(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, int]:
        """Per-channel mean and biased variance of the batch ``x``.

        Args:
            x (Tensor): Input of shape (N, C, H, W).

        Returns:
            tuple[Tensor, Tensor, int]: ``mean`` and ``var`` of shape (C,) and the
            number of elements per channel.
        """
        return x.mean((0, 2, 3)), x.var((0, 2, 3), unbiased=False), x.numel() // x.size(1)

    def synchronised(self) -> bool:
        """Whether :meth:`batch_moments` spans more than this process's batch."""
        return False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x``; with bias-rounding simulation in the folded form.

        Args:
            x (Tensor): Input of shape (N, C, H, W).

        Returns:
            Tensor: The normalised input.
        """
        simulate = self.simulate_bias_rounding and self.input_unit is not None
        if not simulate and not self.synchronised():
            return super().forward(x)
        if simulate and self.training and not self.synchronised() and self.affine and \
                self.track_running_stats:
            return self._train_forward_rounded(x)
        self._check_input_dim(x)
        use_batch_stats = self.training or self.running_mean is None
        if use_batch_stats:
            mean, var, n = self.batch_moments(x)
            if self.training and self.track_running_stats:
                self._update_running_stats(mean.detach(), var.detach(), n)
        else:
            mean, var = self.running_mean, self.running_var
        gamma, beta = self._affine(mean)
        # gamma / sqrt(var + eps), as in fold(): rsqrt rounds differently
        multiplier = gamma / torch.sqrt(var + self.eps)
        if not simulate or self.training:
            plain = ((x - mean.view(1, -1, 1, 1)) * multiplier.view(1, -1, 1, 1) +
                     beta.view(1, -1, 1, 1))
            if not simulate:
                return plain
            return plain + self._rounding_correction(beta, mean, multiplier, x)
        constant, safe, shift = folded_shift(beta, mean, multiplier)
        with torch.no_grad():  # the engine's fold, in float64 as it computes it
            multiplier64 = gamma.detach().double() / torch.sqrt(var.double() + self.eps)
            shift64 = folded_shift(beta.detach().double(), mean.double(), multiplier64)[2]
            grid = self._grid_bias(shift64, constant, self.input_unit.double())
        bias = grid.to(shift.dtype) + (shift - shift.detach())  # straight-through rounding
        out = safe.view(1, -1, 1, 1) * (x + bias.view(1, -1, 1, 1))
        if bool(constant.any()):
            out = torch.where(constant.view(1, -1, 1, 1), bias.view(1, -1, 1, 1).expand_as(out),
                              out)
        return out

    def _grid_bias(self, shift: torch.Tensor, constant: torch.Tensor,
                   unit: torch.Tensor) -> torch.Tensor:
        """What the folded BN adds to its input: ``S * round(c / S)``, ``c = beta / g' - mu``.

        With a conv bias ``b`` (see :meth:`set_input_unit`) the input already holds
        ``S * round(b / S)``, so it is ``S * round((c + b) / S) - S * round(b / S)``;
        a constant (``gamma = 0``) channel ignores its input and keeps ``c = beta``.
        """
        if self.conv_bias is None:
            return unit * torch.round(shift / unit)
        conv_bias = torch.where(constant, torch.zeros_like(shift), self.conv_bias.to(shift))
        return (unit * torch.round((shift + conv_bias) / unit) -
                unit * torch.round(conv_bias / unit))

    @torch.no_grad()
    def _rounding_correction(self, beta: torch.Tensor, mean: torch.Tensor,
                             multiplier: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``g' * (S * round(c / S) - c)``, ``c = beta / g' - mu``: what the grid adds.

        (With a conv bias, :meth:`_grid_bias` in place of ``S * round(c / S)``.)
        Added to the plain BN output as a constant (straight-through rounding), it
        gives ``g' * (x + S * round(c / S))``; a ``gamma = 0`` channel gets
        ``S * round(beta / S) - beta``, which makes it the constant ``beta`` on the grid.
        """
        # float64, as QConv rounds its bias and the engine folds: both roundings of a
        # conv bias b / S then land on the same side of a tie
        unit = self.input_unit.double()
        constant, safe, shift = folded_shift(beta.detach().double(), mean.double(),
                                                   multiplier.double())
        error = self._grid_bias(shift, constant, unit) - shift
        return torch.where(constant, error, safe * error).to(like.dtype).view(1, -1, 1, 1)

    def _train_forward_rounded(self, x: torch.Tensor) -> torch.Tensor:
        """Training forward with the bias on the grid: mmdet's fused BN plus the rounding.

        ``g' * (x + S * round(c / S))`` with ``c = beta / g' - mu`` equals the plain
        BN output ``g' * (x + c)`` plus ``g' * (S * round(c / S) - c)``; the fused
        kernel computes the first part (and updates the running statistics), the
        rounding error is added as a constant (straight-through): the numbers and
        gradients of the unfused training path up to float rounding (the kernel's
        batch statistics may differ in the last bit), several times faster.
        """
        self._check_input_dim(x)
        self.num_batches_tracked.add_(1)
        factor = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                  else self.momentum)
        out, mean, invstd = torch.ops.aten.native_batch_norm(
            x, self.weight, self.bias, self.running_mean, self.running_var, True, factor,
            self.eps)
        multiplier = self.weight.detach() * invstd
        return out + self._rounding_correction(self.bias, mean, multiplier, x)

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, n: int) -> None:
        self.num_batches_tracked.add_(1)
        if self.momentum is None:
            factor = 1.0 / float(self.num_batches_tracked)
        else:
            factor = self.momentum
        # Running variance is unbiased, as in BatchNorm2d.
        self.running_mean.lerp_(mean, factor)
        self.running_var.lerp_(var * n / max(n - 1, 1), factor)
