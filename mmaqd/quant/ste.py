"""Straight-through estimators: non-differentiable forward ops with identity gradients.

They are autograd functions rather than the ``x + (f(x) - x).detach()`` idiom,
whose forward result is only approximately ``f(x)`` in floating point.
"""
import torch


class _RoundSTE(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.round()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad


class _FloorSTE(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.floor()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad


class _ClampMinSTE(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x: torch.Tensor, min_value: float) -> torch.Tensor:
        return x.clamp_min(min_value)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round to the nearest integer (ties to even) with an identity gradient.

    Args:
        x (Tensor): Input.

    Returns:
        Tensor: ``round(x)``; its gradient with respect to ``x`` is 1.
    """
    return _RoundSTE.apply(x)


def floor_ste(x: torch.Tensor) -> torch.Tensor:
    """Round down with an identity gradient.

    Args:
        x (Tensor): Input.

    Returns:
        Tensor: ``floor(x)``; its gradient with respect to ``x`` is 1.
    """
    return _FloorSTE.apply(x)


def clamp_min_ste(x: torch.Tensor, min_value: float) -> torch.Tensor:
    """Clamp from below in the forward pass but pass the gradient through unchanged.

    A plain clamp would zero the gradient of a learned scale that fell below
    ``min_value``, freezing it there for good; with the straight-through clamp the
    optimizer can still move it back up.

    Args:
        x (Tensor): Input, typically a learned scale.
        min_value (float): Smallest value the forward pass uses.

    Returns:
        Tensor: ``max(x, min_value)``; its gradient with respect to ``x`` is 1.
    """
    return _ClampMinSTE.apply(x, min_value)
