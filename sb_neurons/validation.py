"""Input checks shared by the public functions of :mod:`sb_neurons`, :mod:`sb_kernels`, :mod:`sb_layers` and
:mod:`sb_adapters` (a public module: the packages above ``sb_neurons`` import it by this name).

Every public entry point validates its arguments with these helpers so that a bad value fails early
with an error naming the argument and the allowed range, instead of propagating NaNs or being
silently clipped or cast.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def describe(value: object) -> str:
    """A bad argument as error messages show it: a tensor's dtype and shape, else its type's name."""
    if isinstance(value, torch.Tensor):
        return f"{value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__


def check_tensor(x: object, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def check_float_tensor(x: object, name: str, *, finite: bool = True) -> torch.Tensor:
    """``x`` must be a floating-point tensor (float16/bfloat16/float32/float64), finite by default."""
    x = check_tensor(x, name)
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must have a floating dtype among float16, bfloat16, float32, float64; got {x.dtype}"
        )
    if finite and x.numel() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or Inf; spike coding needs finite values")
    return x


def check_integer_valued(x: object, name: str) -> torch.Tensor:
    """``x`` must hold integers: an integer dtype, or a float dtype whose values are all whole."""
    x = check_tensor(x, name)
    if x.dtype == torch.bool:
        return x
    if x.is_floating_point():
        if x.numel() and not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} contains NaN or Inf; counts must be finite integers")
        if x.numel() and not bool((x == torch.round(x)).all()):
            raise ValueError(f"{name} must hold integer counts; found non-integer values")
    elif x.is_complex():
        raise TypeError(f"{name} must be real, got {x.dtype}")
    return x


def _interval(minimum: float | None, maximum: float | None, open_minimum: bool, open_maximum: bool) -> str:
    """The allowed range as error messages write it: ``in [0, 1)``, ``> 0``, ``<= 8`` or ``""``."""
    if minimum is not None and maximum is not None:
        return f" in {'(' if open_minimum else '['}{minimum:g}, {maximum:g}{')' if open_maximum else ']'}"
    if minimum is not None:
        return f" {'>' if open_minimum else '>='} {minimum:g}"
    if maximum is not None:
        return f" {'<' if open_maximum else '<='} {maximum:g}"
    return ""


def check_real(
    value: object,
    name: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    open_minimum: bool = False,
    open_maximum: bool = False,
) -> float:
    """``value`` must be a finite real number (an int or a float, not a bool) in the given interval.

    The bounds are closed unless ``open_minimum`` / ``open_maximum``; ``None`` leaves a side unbounded.
    Returns the value as a float. Raises ``TypeError`` for a non-number and ``ValueError`` for NaN, an
    infinity or a value outside the interval, each naming ``name`` and the interval.
    """
    interval = _interval(minimum, maximum, open_minimum, open_maximum)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a finite number{interval}, got {type(value).__name__}")
    below = minimum is not None and (value <= minimum if open_minimum else value < minimum)
    above = maximum is not None and (value >= maximum if open_maximum else value > maximum)
    if not math.isfinite(value) or below or above:
        raise ValueError(f"{name} must be a finite number{interval}, got {value!r}")
    return float(value)


def check_positive(value: object, name: str) -> float:
    """``value`` must be a finite real number > 0 (``check_real`` with an open minimum of 0)."""
    return check_real(value, name, minimum=0, open_minimum=True)


def check_int(value: object, name: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` must be an int (not a bool) in ``[minimum, maximum]`` (``None``: unbounded on that side).

    Raises ``TypeError`` for a non-int and ``ValueError`` outside the range, naming ``name`` and the range.
    """
    interval = _interval(minimum, maximum, False, False)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int{interval}, got {type(value).__name__}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be an int{interval}, got {value}")
    return value


def check_dim_spec(dim: object, name: str = "dim") -> int | tuple[int, ...]:
    """``dim`` must be an int or a non-empty sequence of distinct ints (checked against a rank later)."""
    dims = (dim,) if isinstance(dim, int) and not isinstance(dim, bool) else dim
    if not isinstance(dims, (tuple, list)) or not dims or any(isinstance(d, bool) or not isinstance(d, int) for d in dims):
        raise TypeError(f"{name} must be an int or a non-empty sequence of ints, got {dim!r}")
    if len(set(dims)) != len(dims):
        raise ValueError(f"{name} repeats a dimension: {dim!r}")
    return dim if isinstance(dim, int) else tuple(dim)


def normalize_dims(dim: int | Iterable[int], ndim: int, name: str = "dim") -> tuple[int, ...]:
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    if not dims:
        raise ValueError(f"{name} must name at least one dimension")
    out = []
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, int):
            raise TypeError(f"{name} must be an int or a sequence of ints, got {dim!r}")
        if not -ndim <= d < ndim:
            raise ValueError(f"{name}={d} is out of range for a tensor with {ndim} dimensions")
        out.append(d % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"{name} repeats a dimension: {dim!r}")
    return tuple(out)


def check_same_device(named: Iterable[tuple[str, object]]) -> None:
    """The tensors among ``(name, value)`` pairs (None and numbers skipped) must share the first one's device."""
    first: tuple[str, torch.device] | None = None
    for name, value in named:
        if not isinstance(value, torch.Tensor):
            continue
        if first is None:
            first = (name, value.device)
        elif value.device != first[1]:
            raise ValueError(f"{name} is on {value.device} but {first[0]} is on {first[1]}: all tensors must share one device")
