"""Surrogate gradients: Heaviside step forward, a smooth derivative backward.

``spike = surrogate(v - v_th)`` is ``1.0`` where ``v - v_th >= 0`` and ``0.0`` elsewhere; its backward
pass uses the derivative of a smooth stand-in (sigmoid or arctangent), finite for every finite input.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .validation import check_float_tensor, check_positive


class _SigmoidSpike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        sg = torch.sigmoid(ctx.alpha * x)
        return grad * ctx.alpha * sg * (1.0 - sg), None


class _ATanSpike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        return grad * (ctx.alpha / 2) / (1.0 + (math.pi / 2 * ctx.alpha * x) ** 2), None


class SurrogateSpike(nn.Module):
    """Base of the surrogate spike functions; ``alpha`` (> 0) sets the slope of the derivative."""

    def __init__(self, alpha: float) -> None:
        super().__init__()
        self.alpha = check_positive(alpha, "alpha")

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        """The surrogate derivative at ``x`` (what backward multiplies the incoming gradient by)."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


class Sigmoid(SurrogateSpike):
    """Derivative ``alpha * sigmoid(alpha x) * (1 - sigmoid(alpha x))``; peak ``alpha / 4`` at 0."""

    def __init__(self, alpha: float = 4.0) -> None:
        super().__init__(alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_float_tensor(x, "x", finite=False)  # elementwise, as heaviside (NaN gives 0)
        return _SigmoidSpike.apply(x, self.alpha)

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        sg = torch.sigmoid(self.alpha * x)
        return self.alpha * sg * (1.0 - sg)


class ATan(SurrogateSpike):
    """Derivative ``(alpha / 2) / (1 + (pi / 2 * alpha * x)^2)``; peak ``alpha / 2`` at 0."""

    def __init__(self, alpha: float = 2.0) -> None:
        super().__init__(alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_float_tensor(x, "x", finite=False)  # elementwise, as heaviside (NaN gives 0)
        return _ATanSpike.apply(x, self.alpha)

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        return (self.alpha / 2) / (1.0 + (math.pi / 2 * self.alpha * x) ** 2)


_SURROGATES: dict[str, type[SurrogateSpike]] = {"sigmoid": Sigmoid, "atan": ATan}


def get_surrogate(surrogate: str | Callable[[torch.Tensor], torch.Tensor], alpha: float | None = None) -> Callable:
    """A surrogate spike function by name (``"sigmoid"``, ``"atan"``), or ``surrogate`` itself if callable.

    ``alpha`` overrides the default slope of a named surrogate.
    """
    if callable(surrogate):
        if alpha is not None:
            raise ValueError("alpha applies to a named surrogate only; configure a callable surrogate yourself")
        return surrogate
    if surrogate not in _SURROGATES:
        raise ValueError(f"surrogate must be one of {', '.join(_SURROGATES)} or a callable; got {surrogate!r}")
    cls = _SURROGATES[surrogate]
    return cls() if alpha is None else cls(alpha)
