"""Residual / FPN addition with optional simulation of its integer alignment."""
from typing import NamedTuple, Optional, Union

import torch
from torch import nn

from .fixed_point import DEFAULT_FRAC_BITS, apply_fixed_point, fixed_point_multiplier
from .ste import floor_ste, round_ste


class AddAlignment(NamedTuple):
    """How an integer engine adds two integer tensors with different units.

    See docs/integer_arithmetic.md §3.

    ``out = Xi * M_x + Yi * M_y`` in ``output_unit``, where ``Xi``, ``Yi`` are the
    operands in their own units and ``M = mantissa / 2^frac_bits`` is rounded
    half up. The operand with the smaller unit has ``M = 1`` exactly.

    Attributes:
        output_unit (Tensor): ``min(unit_x, unit_y)``, shape (1,) or (C,).
        mantissa_x (Tensor): int64 fixed-point mantissa of ``unit_x / output_unit``.
        mantissa_y (Tensor): int64 fixed-point mantissa of ``unit_y / output_unit``.
        frac_bits (int): Fraction bits of the mantissas.
    """
    output_unit: torch.Tensor
    mantissa_x: torch.Tensor
    mantissa_y: torch.Tensor
    frac_bits: int


def add_alignment(unit_x: torch.Tensor, unit_y: torch.Tensor,
                  frac_bits: int = DEFAULT_FRAC_BITS) -> AddAlignment:
    """How the integer engine adds operands in ``unit_x`` and ``unit_y``.

    Args:
        unit_x (Tensor): float64 unit of the first operand, (1,) or (C,).
        unit_y (Tensor): float64 unit of the second operand, likewise.
        frac_bits (int): Fraction bits of the mantissas. Defaults to 15.

    Returns:
        AddAlignment: The output unit ``min(unit_x, unit_y)`` and both mantissas.
    """
    output_unit = torch.minimum(unit_x, unit_y)
    return AddAlignment(output_unit, fixed_point_multiplier(unit_x / output_unit, frac_bits),
                        fixed_point_multiplier(unit_y / output_unit, frac_bits), frac_bits)


class QAdd(nn.Module):
    """Element-wise ``x + y`` for residual and FPN top-down additions.

    By default a float addition. With ``simulate_alignment`` and units set by
    :meth:`set_units`, it computes what the integer engine computes: each operand
    is rounded to its own (per-channel) unit, the output unit is the per-channel
    minimum of the two, the other operand is rescaled by the fixed-point ratio
    of the units, and the integers are added. Rounding is straight-through.

    The units are not saved in the state dict: they follow learned scales and
    have to be set again as those change.

    Args:
        simulate_alignment (bool): Simulate the integer alignment once units are
            set. Defaults to False.
        frac_bits (int): Fraction bits of the rescaling multipliers. Defaults to 15.
    """

    def __init__(self, simulate_alignment: bool = False,
                 frac_bits: int = DEFAULT_FRAC_BITS) -> None:
        super().__init__()
        self.simulate_alignment = simulate_alignment
        self.frac_bits = frac_bits
        self.register_buffer('unit_x', None, persistent=False)
        self.register_buffer('unit_y', None, persistent=False)

    def set_units(self, unit_x: Union[torch.Tensor, float, None],
                  unit_y: Union[torch.Tensor, float, None]) -> None:
        """Set (or clear, with None) the real units of the two operands.

        Args:
            unit_x (Tensor | float | None): Unit of ``x``: scalar, (1,) or per-channel (C,).
            unit_y (Tensor | float | None): Unit of ``y``, likewise.
        """
        if unit_x is None or unit_y is None:
            self.unit_x = self.unit_y = None
            return
        # float64: the mantissas are ratios of these units, and float32 units put them
        # up to 2 off the exact ratio of the engine's (float64) units.
        unit_x = torch.as_tensor(unit_x).detach().to(torch.float64).reshape(-1)
        unit_y = torch.as_tensor(unit_y).detach().to(torch.float64).reshape(-1)
        if not ((unit_x > 0).all() and (unit_y > 0).all()):
            raise ValueError(f'{type(self).__name__}: units must be positive, got '
                             f'{unit_x.tolist()} and {unit_y.tolist()}')
        self.unit_x, self.unit_y = unit_x, unit_y

    def alignment(self) -> Optional[AddAlignment]:
        """The output unit and the operands' fixed-point multipliers.

        Returns:
            AddAlignment, optional: None if no units are set.
        """
        if self.unit_x is None:
            return None
        return add_alignment(self.unit_x, self.unit_y, self.frac_bits)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Add ``x`` and ``y``.

        Args:
            x (Tensor): First operand, (N, C, ...); e.g. the residual branch.
            y (Tensor): Second operand, same shape; e.g. the shortcut.

        Returns:
            Tensor: ``x + y``, or its simulated integer form.
        """
        align = self.alignment() if self.simulate_alignment else None
        if align is None:
            return x + y
        shape = (1, -1) + (1, ) * (x.dim() - 2)
        unit_x = self.unit_x.to(x).view(shape)
        unit_y = self.unit_y.to(x).view(shape)
        if self.training:  # in the tensors' dtype: exact enough to train on, and fast
            scale = 2.0**-self.frac_bits
            mx = (align.mantissa_x.to(x) * scale).view(shape)
            my = (align.mantissa_y.to(x) * scale).view(shape)
            xi = floor_ste(round_ste(x / unit_x) * mx + 0.5)
            yi = floor_ste(round_ste(y / unit_y) * my + 0.5)
        else:  # in float64: the engine's integers exactly
            xi = apply_fixed_point(round_ste(x / unit_x), align.mantissa_x.view(shape),
                                   self.frac_bits)
            yi = apply_fixed_point(round_ste(y / unit_y), align.mantissa_y.view(shape),
                                   self.frac_bits)
        return align.output_unit.to(x).view(shape) * (xi + yi)

    def extra_repr(self) -> str:
        return f'simulate_alignment={self.simulate_alignment}, frac_bits={self.frac_bits}'
