"""Integer-aware fake quantization: the fake-quant model computes what the engine computes.

The integer engine differs from plain fake quantization in four places
(docs/integer_arithmetic.md): it adds each BN's bias on the accumulator grid,
rounds a conv's own bias to that grid too, aligns the operands of an add with
fixed-point ratios, and rounds its requantization half up from the producer's
integers with a fixed-point multiplier. :func:`set_integer_aware` switches the
layers of a model to simulate all four, with straight-through rounding, so that
training sees the integer model's arithmetic. The units the simulation needs
come from a conversion of the model (:mod:`mmaqd.integer.simulation`); until they
are set, each layer computes as before.

In eval mode the simulation is exact: an input quantizer given an
:class:`EngineRequant` recovers the producer's integers and requantizes them as
the engine does, and a :class:`~mmaqd.quant.QConv` convolves integer codes, so
that the fake-quant model's outputs are the engine's integers times their units.
"""
from typing import Dict, Tuple

import torch
from torch import nn

from .qadd import QAdd
from .qbn import QBN
from .qconv import QConv


class EngineRequant:
    """The integer engine's requantization of one conv input, for eval mode.

    ``codes = clamp(floor(n * m0 / 2^shift + 1/2), Qn, Qp)`` with ``n = round(x / unit)``
    the producer's integers (``x`` is ``n * unit`` up to float rounding), computed in
    float64. Exact while ``|n| < 2^22`` (the product then has at most 53 bits).

    Args:
        unit (Tensor): ``(C,)`` or ``(1,)`` real unit of the producer's integers.
        m0 (Tensor): int64 mantissas of ``unit / s_x``, like ``unit``.
        shift (Tensor): int64 right shifts, like ``unit``.
    """

    def __init__(self, unit: torch.Tensor, m0: torch.Tensor, shift: torch.Tensor) -> None:
        self.unit = unit.detach().double().reshape(-1)
        self.multiplier = (m0.double() * torch.pow(2.0, -shift.double())).reshape(-1)

    def __call__(self, x: torch.Tensor, code_range: Tuple[int, int],
                scale: torch.Tensor) -> torch.Tensor:
        """The codes of ``x`` times ``scale``, in the dtype of ``x``.

        Args:
            x (Tensor): The producer's output, (N, C, H, W).
            code_range (tuple[int, int]): ``(Qn, Qp)`` of the quantizer.
            scale (Tensor): The quantizer's step.

        Returns:
            Tensor: ``codes * scale``.
        """
        shape = (1, -1) + (1, ) * (x.dim() - 2)
        with torch.no_grad():
            n = torch.round(x.double() / self.unit.to(x.device).view(shape))
            codes = torch.floor(n * self.multiplier.to(x.device).view(shape) + 0.5)
            codes.clamp_(*code_range)
        return (codes * scale.double()).to(x.dtype)


def set_integer_aware(model: nn.Module, enabled: bool = True) -> Dict[str, int]:
    """Switch every quantized layer of ``model`` to (or back from) integer-aware QAT.

    Sets ``simulate_bias_rounding`` on QBN and QConv, ``simulate_alignment`` on
    QAdd and ``round_half_up`` on the input quantizers. Turning it off also clears
    the units and requantizations, so the model computes exactly as before.

    Args:
        model (nn.Module): The model.
        enabled (bool): On or off. Defaults to True.

    Returns:
        dict: How many QConv, QBN, QAdd and input quantizers were switched.
    """
    counts = {'QConv': 0, 'QBN': 0, 'QAdd': 0, 'input quantizers': 0}
    for module in model.modules():
        if isinstance(module, QConv):
            module.integer_aware = enabled
            counts['QConv'] += 1
            for quantizer in module.input_quantizers:
                quantizer.round_half_up = enabled
                counts['input quantizers'] += 1
                if not enabled:
                    quantizer.engine_requant = None
        elif isinstance(module, QBN):
            module.simulate_bias_rounding = enabled
            counts['QBN'] += 1
            if not enabled:
                module.set_input_unit(None)
        elif isinstance(module, QAdd):
            module.simulate_alignment = enabled
            counts['QAdd'] += 1
            if not enabled:
                module.set_units(None, None)
    return counts


__all__ = ['EngineRequant', 'set_integer_aware']
