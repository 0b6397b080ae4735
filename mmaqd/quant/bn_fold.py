"""Folding an inference-mode BN after a quantized conv into an integer bias.

One fold serves both the fake-quant :class:`~mmaqd.quant.QBN` (what integer-aware
QAT simulates) and the integer engine's conversion, so the two cannot disagree on
an integer bias.
"""
from typing import NamedTuple, Optional, Tuple, Union

import torch
from torch.nn.modules.batchnorm import _BatchNorm

#: A folded bias must stay below this magnitude (accumulator units) to fit int64.
MAX_FOLDED_BIAS = 2.0**62


class FoldedBN(NamedTuple):
    """The integer form of a BN that follows a quantized conv (docs/integer_arithmetic.md §2).

    ``BN(y) = multiplier * (y + bias * unit)`` for a conv accumulator ``y``
    measured in ``unit``; an integer engine adds ``bias`` to the int32
    accumulator and merges ``multiplier * unit`` into the next re-quantizer.

    Attributes:
        bias (Tensor): Integer bias ``B = round((beta / g' - mu + b) / S)`` (``b`` the
            conv's bias, if any), int64, shape (C,). A ``gamma = 0`` channel has
            ``round(beta / S)``: its output is the constant ``beta``.
        multiplier (Tensor): Per-channel real multiplier ``g' = gamma / sqrt(var + eps)``,
            float64, shape (C,); 0 at the constant channels.
        unit (Tensor): Accumulator unit ``S = s_x * s_w``, float64, shape (1,) or (C,).
        constant (Tensor): Bool mask of the ``gamma = 0`` channels, shape (C,).
    """
    bias: torch.Tensor
    multiplier: torch.Tensor
    unit: torch.Tensor
    constant: torch.Tensor


def folded_shift(beta: torch.Tensor, mean: torch.Tensor,
                 multiplier: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The folded BN's input shift ``c = beta / g' - mu`` and its ``gamma = 0`` channels.

    Args:
        beta (Tensor): BN bias, shape (C,).
        mean (Tensor): The mean the BN subtracts, shape (C,).
        multiplier (Tensor): ``g' = gamma / sqrt(var + eps)``, shape (C,).

    Returns:
        tuple[Tensor, Tensor, Tensor]: ``constant`` (channels with ``g' = 0``, whose
        output is the constant ``beta``), ``safe`` (``g'`` with 1 there) and ``c``
        (``beta`` there).
    """
    constant = multiplier == 0
    safe = torch.where(constant, torch.ones_like(multiplier), multiplier)
    return constant, safe, torch.where(constant, beta, beta / safe - mean)


def fold_batch_norm(bn: _BatchNorm, unit: Union[torch.Tensor, float],
                    conv_bias: Optional[torch.Tensor] = None) -> FoldedBN:
    """Fold ``bn``'s running statistics (and the conv bias before it) in float64.

    Args:
        bn (_BatchNorm): The BN, with running statistics.
        unit (Tensor | float): The conv's accumulator unit ``S``, scalar, shape (1,)
            or (C,), positive.
        conv_bias (Tensor, optional): The conv's float bias ``b``, shape (C,). A
            constant (``gamma = 0``) channel ignores it: its input is zeroed.

    Returns:
        FoldedBN: The integer bias, ``g'``, ``S`` and the constant channels.

    Raises:
        ValueError: ``bn`` has no running statistics, or a bias does not fit int64
            (a ``gamma`` near 0 makes ``beta / g'`` huge), naming the channel.
    """
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(f'{type(bn).__name__}: folding needs running statistics '
                         f'(track_running_stats=True)')
    mean = bn.running_mean.detach().double()
    var = bn.running_var.detach().double()
    gamma = bn.weight.detach().double() if bn.affine else torch.ones_like(mean)
    beta = bn.bias.detach().double() if bn.affine else torch.zeros_like(mean)
    multiplier = gamma / torch.sqrt(var + bn.eps)
    constant, _, shift = folded_shift(beta, mean, multiplier)
    if conv_bias is not None:
        bias64 = conv_bias.detach().to(shift).reshape(-1)
        shift = torch.where(constant, shift, shift + bias64)
    unit = torch.as_tensor(unit, dtype=torch.float64).to(shift.device).reshape(-1)
    bias = torch.round(shift / unit)
    huge = torch.nonzero(~(bias.abs() < MAX_FOLDED_BIAS))  # int64 would wrap, or not finite
    if len(huge):
        channel = int(huge[0])
        raise ValueError(f'{type(bn).__name__} channel {channel}: folded bias '
                         f'{float(bias[channel]):.4g} accumulator units does not fit int64 '
                         f'(gamma {float(gamma[channel]):.3g}, beta {float(beta[channel]):.3g}:'
                         f' a gamma near 0 makes it large)')
    return FoldedBN(bias.to(torch.int64), multiplier, unit, constant)


__all__ = ['FoldedBN', 'MAX_FOLDED_BIAS', 'folded_shift', 'fold_batch_norm']
