"""Backend resolution and kernel launching shared by every op of :mod:`sb_kernels` (a public module:
:mod:`sb_layers` and :mod:`sb_adapters` import ``needs_grad``, ``BACKENDS`` and ``triton_importable`` from it).

Each op takes ``backend="torch" | "triton" | "auto"``:

- ``"torch"``: the pure-PyTorch reference, any device.
- ``"triton"``: the Triton kernel. On CUDA tensors it is compiled; on CPU tensors it runs in Triton's
  interpreter, and only when ``TRITON_INTERPRET=1`` is set (that is how CI tests the kernels' logic).
  Anything else is a ``RuntimeError`` that says why: asking for Triton never falls back silently.
- ``"auto"``: Triton on CUDA tensors when Triton is importable, the reference otherwise (and always
  the reference inside :func:`use_reference`).

Triton reads ``TRITON_INTERPRET`` when ``@triton.jit`` decorates a function, so a module imported before
the variable was set would hold compiled-only kernels. :class:`LazyKernel` decides per launch instead:
interpreted for CPU tensors, compiled for CUDA tensors, each built once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache
from typing import Any, Literal

import torch

Backend = Literal["torch", "triton", "auto"]
BACKENDS = ("torch", "triton", "auto")
_AUTO_IS_TORCH: ContextVar[bool] = ContextVar("sb_kernels_auto_is_torch", default=False)


@contextmanager
def use_reference() -> Iterator[None]:
    """Within the block, every op called with ``backend="auto"`` runs its PyTorch reference.

    For comparing a whole model's fast path with its reference path (layers call the kernels with
    ``"auto"``); an explicit ``backend="triton"`` is left as asked. Nests, and is local to the thread.
    """
    token = _AUTO_IS_TORCH.set(True)
    try:
        yield
    finally:
        _AUTO_IS_TORCH.reset(token)


def reference_forced() -> bool:
    """Whether the caller is inside :func:`use_reference` (where ``"auto"`` means the PyTorch reference):
    for layers that choose a fast path of their own on ``"auto"`` (``sb_layers.resolve_linear_backend``)."""
    return _AUTO_IS_TORCH.get()


@cache
def triton_importable() -> bool:
    """Whether ``import triton`` works in this environment."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def interpreter_enabled() -> bool:
    """Whether ``TRITON_INTERPRET`` asks for Triton's CPU interpreter (read at every call)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def resolve_backend(backend: object, *tensors: torch.Tensor, op: str) -> Literal["torch", "triton"]:
    """The backend an op runs on, given the user's choice and the tensors' device.

    Raises ``ValueError`` for an unknown name and ``RuntimeError`` when ``"triton"`` cannot run here.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
    on_cuda = all(t.is_cuda for t in tensors)
    on_cpu = all(t.device.type == "cpu" for t in tensors)
    if backend == "torch":
        return "torch"
    if backend == "auto":
        return "triton" if on_cuda and triton_importable() and not _AUTO_IS_TORCH.get() else "torch"
    if not triton_importable():
        raise RuntimeError(f"{op}: backend='triton' needs the triton package, which is not importable")
    if on_cuda:
        return "triton"
    if on_cpu and interpreter_enabled():
        return "triton"
    if on_cpu:
        raise RuntimeError(
            f"{op}: backend='triton' on CPU tensors runs only in Triton's interpreter; set TRITON_INTERPRET=1, "
            "move the tensors to CUDA, or use backend='torch'"
        )
    raise RuntimeError(f"{op}: backend='triton' needs all tensors on one CUDA device (or CPU with TRITON_INTERPRET=1)")


class LazyKernel:
    """A Triton kernel built on first launch: compiled for CUDA tensors, interpreted for CPU tensors.

    ``kernel[grid](*args, **meta)`` as with ``@triton.jit``; the first tensor argument picks the mode.
    """

    def __init__(self, fn: Callable[..., Any], **jit_options: Any) -> None:
        self.fn = fn
        self.jit_options = jit_options
        self._compiled: Any = None
        self._interpreted: Any = None
        self.__doc__ = fn.__doc__
        self.__name__ = fn.__name__

    def for_device(self, device: torch.device) -> Any:
        if device.type == "cpu":
            if self._interpreted is None:
                from triton.runtime.interpreter import InterpretedFunction

                self._interpreted = InterpretedFunction(self.fn)
            return self._interpreted
        if self._compiled is None:
            from triton.runtime.jit import JITFunction

            self._compiled = JITFunction(self.fn, **self.jit_options)
        return self._compiled

    def __getitem__(self, grid: Any) -> Callable[..., Any]:
        def launch(*args: Any, **kwargs: Any) -> Any:
            device = next(a.device for a in args if isinstance(a, torch.Tensor))
            return self.for_device(device)[grid](*args, **kwargs)

        return launch


def lazy_jit(fn: Callable[..., Any] | None = None, **jit_options: Any) -> Any:
    """Decorator: a :class:`LazyKernel` of ``fn`` (use in place of ``@triton.jit``); keyword options
    (e.g. ``do_not_specialize=("N",)``) go to Triton's ``JITFunction``.

    Triton compiles an integer argument equal to 1 as a constant; an argument the kernel converts with
    ``.to(...)`` must be listed in ``do_not_specialize``.
    """
    if fn is None:
        return lambda f: LazyKernel(f, **jit_options)
    return LazyKernel(fn, **jit_options)


@cache
def _cuda_sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def sm_count(device: torch.device, interpreter: int) -> int:
    """Streaming multiprocessors of a CUDA ``device`` (cached), or ``interpreter`` for a CPU tensor's
    device (Triton's interpreter): launch heuristics that size grids by the SM count take it from here."""
    if device.type != "cuda":
        return interpreter
    return _cuda_sm_count(device.index if device.index is not None else torch.cuda.current_device())


def needs_grad(*tensors: torch.Tensor | None) -> bool:
    """Whether autograd would record an operation on ``tensors`` now (None entries ignored): where a
    forward-only kernel must give way to a differentiable computation."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def resolve_forward_backend(
    backend: object, *tensors: torch.Tensor, op: str, dtypes: tuple[torch.dtype, ...], unsupported: str | None = None,
    device_only: tuple[torch.Tensor | None, ...] = (),
) -> Literal["torch", "triton"]:
    """:func:`resolve_backend` for an op whose Triton kernel is forward only and takes one dtype.

    Triton is chosen only when no tensor needs a gradient, all share one dtype among ``dtypes`` and
    ``unsupported`` (the caller's own reason against the kernel, if any) is None. Otherwise ``"auto"``
    takes the PyTorch reference and ``"triton"`` raises a ``RuntimeError`` saying why. ``device_only``:
    further tensors (None skipped) of other dtypes (masks, indices, states) that the kernel reads or
    writes: they count for the device rule only.
    """
    chosen = resolve_backend(backend, *tensors, *(t for t in device_only if t is not None), op=op)
    if chosen == "torch":
        return chosen
    reason = unsupported
    kinds = {t.dtype for t in tensors}
    if needs_grad(*tensors):
        reason = "the Triton kernel is forward only and an input requires grad"
    elif len(kinds) != 1 or not kinds <= set(dtypes):
        names = ", ".join(str(d).removeprefix("torch.") for d in dtypes)
        reason = f"the Triton kernel takes tensors of one dtype among {names}, got {sorted(map(str, kinds))}"
    if reason is None:
        return "triton"
    if backend == "auto":
        return "torch"
    raise RuntimeError(f"{op}: backend='triton' cannot run here: {reason}; use backend='torch' or 'auto'")
