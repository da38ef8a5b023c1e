"""Helpers shared by the ``tests/kernels/test_kernels_*.py`` modules.

Triton's interpreter. Without CUDA, tests/conftest.py imports Triton once with ``TRITON_INTERPRET=1``
(its standard library is built for the interpreter only then) and restores the variable. Kernels are
built per launch by :class:`sb_kernels.dispatch.LazyKernel` (interpreted for CPU tensors, compiled
for CUDA tensors) and :func:`sb_kernels.resolve_backend` reads ``TRITON_INTERPRET`` at every call, so
the ``triton_interpreter`` fixture sets it only while a CPU kernel test runs: the rest of the suite
keeps the default dispatch rules, with no subprocess and no import-order dependence.

Devices. A property test parametrized with ``DEVICES`` runs on CPU tensors (the kernels interpreted)
and, marked ``gpu``, on CUDA tensors (the kernels compiled; skipped without CUDA by tests/conftest.py).
Compiles are cached per constexpr combination and integer specialization, so a CUDA variant draws
block-determining widths from a small sampled set (:func:`widths`) where the CPU one draws a range.
"""

from __future__ import annotations

import pytest
import torch

CUDA = torch.cuda.is_available()
triton = pytest.importorskip("triton")
from hypothesis import strategies as st  # noqa: E402

# A pytest.param's marks are the item's own markers: get_closest_marker("gpu") sees them.
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]
INTERPRETER_TOO_OLD = tuple(int(part) for part in triton.__version__.split(".")[:2]) < (3, 9)


def widths(device: str, low: int, high: int, cuda: tuple[int, ...]) -> st.SearchStrategy[int]:
    """``low..high`` on CPU; on CUDA the few widths ``cuda`` (within that range), so that compiles stay bounded."""
    assert all(low <= w <= high for w in cuda)
    return st.integers(low, high) if device == "cpu" else st.sampled_from(cuda)


@pytest.fixture(autouse=True)
def triton_interpreter(request, monkeypatch):
    """``TRITON_INTERPRET=1`` for CPU tests; unset for GPU-marked tests (compiled kernels).

    CPU tests need the interpreter of Triton 3.9 or later (the test extra's pin): 3.6's fails inside
    every kernel with ``only 0-dimensional arrays can be converted to Python scalars`` and rounds an fma
    twice; it still compiles the kernels for GPUs, so only the interpreted tests are skipped there.
    """
    if request.node.get_closest_marker("gpu") is None:
        if INTERPRETER_TOO_OLD:
            pytest.skip(f"Triton {triton.__version__}'s interpreter cannot run the kernels (needs >= 3.9)")
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    else:
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    yield


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """``||out - ref|| / ||ref||`` in float64 (NaN anywhere makes it NaN, which fails every bound)."""
    out, ref = out.double().cpu(), ref.double().cpu()
    return float((out - ref).norm() / ref.norm().clamp_min(1e-300))


def heavy_tailed(shape, seed: int, scale: float = 1.0, dtype=torch.float32, device="cpu") -> torch.Tensor:
    """Random activations with outliers (ratio of normals to uniforms): counts far past 127 occur."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64) / torch.rand(shape, generator=g, dtype=torch.float64).clamp_min(0.01)
    return (x * scale).to(dtype).to(device)
