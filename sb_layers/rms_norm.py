"""RMSNorm as in the release: ``weight * x / sqrt(mean(x^2) + eps)``, computed in float32.

The arithmetic lives in :func:`sb_kernels.rms_norm` (a PyTorch reference and a one-pass Triton kernel).
"""

from __future__ import annotations

import torch
from torch import nn

from sb_neurons.validation import check_int, check_positive

from sb_kernels import Backend, add_rms_norm, rms_norm
from sb_kernels.dispatch import BACKENDS


class RMSNorm(nn.Module):
    """Root-mean-square normalization over the last dimension (``hidden_size``), with a learned scale.

    Shapes: ``[..., hidden_size] -> [..., hidden_size]`` in the input's dtype; the statistics are taken
    in float32 (float64 for float64 input). ``backend`` picks :func:`sb_kernels.rms_norm`'s path
    (``"auto"``: the Triton kernel for CUDA inputs when no gradient is needed, PyTorch otherwise).
    """

    def __init__(self, hidden_size: int, eps: float = 1e-6, device=None, dtype=None, backend: Backend = "auto") -> None:
        super().__init__()
        check_int(hidden_size, "hidden_size", minimum=1)
        check_positive(eps, "eps")
        self.weight = nn.Parameter(torch.ones(hidden_size, device=device, dtype=dtype))
        self.eps = float(eps)
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
        self.backend = backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_width(x)
        return rms_norm(x, self.weight, self.eps, backend=self.backend)

    def add_forward(self, x: torch.Tensor, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(self(x + residual), x + residual)``, in one pass on the Triton path (a pre-norm residual step)."""
        self._check_width(x)
        return add_rms_norm(x, residual, self.weight, self.eps, backend=self.backend)

    def _check_width(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim == 0 or x.shape[-1] != self.weight.shape[0]:
            raise ValueError(f"input's last dimension must be {self.weight.shape[0]}, got shape {tuple(x.shape)}")

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"
