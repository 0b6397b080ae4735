"""Fixed-point multipliers ``M = M0 * 2^-frac_bits`` for integer rescaling."""
import torch

from .ste import floor_ste

#: Fraction bits of the reference code's fixed-point multipliers (``d <= 15``).
DEFAULT_FRAC_BITS = 15


def fixed_point_multiplier(ratio: torch.Tensor,
                           frac_bits: int = DEFAULT_FRAC_BITS) -> torch.Tensor:
    """The integer mantissa ``M0 = round(ratio * 2^frac_bits)``.

    Args:
        ratio (Tensor): Positive real multipliers.
        frac_bits (int): Number of fraction bits. Defaults to 15.

    Returns:
        Tensor: int64 mantissas with the shape of ``ratio``.
    """
    return torch.round(ratio.detach().double() * 2**frac_bits).to(torch.int64)


def apply_fixed_point(x: torch.Tensor, mantissa: torch.Tensor,
                      frac_bits: int = DEFAULT_FRAC_BITS) -> torch.Tensor:
    """``round_half_up(x * M0 / 2^frac_bits)`` on float tensors holding integers.

    Computed in float64, so the result is exact while ``|x * M0| < 2^53``, and
    equals the integer engine's ``(x * M0 + 2^(frac_bits-1)) >> frac_bits``. The
    gradient with respect to ``x`` is ``M0 / 2^frac_bits`` (straight-through
    rounding).

    Args:
        x (Tensor): Integer-valued float tensor.
        mantissa (Tensor): ``M0`` from :func:`fixed_point_multiplier`, broadcastable to ``x``.
        frac_bits (int): Number of fraction bits. Defaults to 15.

    Returns:
        Tensor: The rescaled integer-valued tensor, in the dtype of ``x``.
    """
    scaled = x.double() * (mantissa.to(x.device, torch.float64) / 2**frac_bits)
    return floor_ste(scaled + 0.5).to(x.dtype)
