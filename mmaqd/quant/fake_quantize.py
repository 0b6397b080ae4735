"""Uniform fake quantization with a learnable scale and the LSQ gradients."""
import torch


class _FakeQuantize(torch.autograd.Function):
    """Uniform fake quantization with the LSQ gradients, written out for speed.

    Everything is plain vectorised element-wise ops: on CPU torch's fused
    ``fake_quantize_per_*_affine`` kernels, bool masks and ``torch.where`` are each
    several times slower than a division. The input mask comes from
    ``hardtanh_backward`` (open interval, as in the LSQ paper), and the scale
    gradient ``sum(grad * (q - mask * x / s))`` is computed as
    ``sum(grad * out) / s - sum(grad_x * x / s)``: two reductions over tensors that
    exist anyway.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: torch.Tensor, qn: int, qp: int, grad_scale: float,
                min_scale: float, half_up: bool) -> torch.Tensor:
        # The clamp is straight-through: backward returns the gradient to ``scale``.
        s = scale.detach().clamp_min(min_scale)
        s_b = s if s.numel() == 1 else s.view(-1, *([1] * (x.dim() - 1)))
        # One temporary, updated in place; backward recomputes x / s rather than
        # keeping an activation-sized tensor alive until then.
        out = (x / s_b).clamp_(qn, qp)
        out = (out.add_(0.5).floor_() if half_up else out.round_()).mul_(s_b)
        ctx.save_for_backward(x, s, out)
        ctx.qn, ctx.qp, ctx.grad_scale = qn, qp, grad_scale
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, s, out = ctx.saved_tensors
        x_s = x / (s if s.numel() == 1 else s.view(-1, *([1] * (x.dim() - 1))))
        grad_out = grad_out.contiguous()
        grad_x_s = torch.ops.aten.hardtanh_backward(grad_out, x_s, ctx.qn, ctx.qp)
        grad_s = None
        if ctx.needs_input_grad[1]:
            if s.numel() == 1:
                grad_s = (torch.dot(grad_out.reshape(-1), out.reshape(-1)) / s -
                          torch.dot(grad_x_s.reshape(-1), x_s.reshape(-1)))
            else:
                dims = tuple(range(1, x_s.dim()))
                grad_s = (grad_out * out).sum(dims) / s - (grad_x_s * x_s).sum(dims)
            grad_s = grad_s * ctx.grad_scale
        return grad_x_s, grad_s, None, None, None, None, None


def fake_quantize(x: torch.Tensor,
                  scale: torch.Tensor,
                  qn: int,
                  qp: int,
                  grad_scale: float = 1.0,
                  min_scale: float = 0.0,
                  half_up: bool = False) -> torch.Tensor:
    """``clamp(round(x / s), Qn, Qp) * s`` with LSQ gradients (Esser et al., 2020).

    Gradients, as in the LSQ paper: ``x`` gets the incoming gradient where
    ``Qn < x / s < Qp`` and 0 elsewhere (straight-through rounding); ``s`` gets
    ``grad_scale`` times the sum of the incoming gradient times
    ``round(x / s) - x / s`` strictly inside the range and ``Qn`` / ``Qp`` at or
    beyond its ends. The forward pass uses ``max(s, min_scale)``; the backward pass
    hands the gradient to ``s`` as if unclamped. Rounding is half to even, or half
    up (``floor(v + 1/2)``, the integer engine's requantization) with ``half_up``.

    Args:
        x (Tensor): Input; with a per-channel scale, dim 0 is the channel dim.
        scale (Tensor): Scale of shape (1,) (per tensor) or (C,) (per channel of dim 0).
        qn (int): Smallest integer code.
        qp (int): Largest integer code.
        grad_scale (float): Factor applied to the gradient of ``scale``. Defaults to 1.
        min_scale (float): Smallest scale used in the forward pass. Defaults to 0.
        half_up (bool): Round ties up instead of to even. Defaults to False.

    Returns:
        Tensor: The fake-quantized ``x``.
    """
    return _FakeQuantize.apply(x, scale, qn, qp, grad_scale, min_scale, half_up)
