"""The tables of ``spikingbrain estimate``: :func:`format_estimates` (the cost model at each context length)
and :func:`format_comparison` (theory beside a measured run)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from .cost_model import Estimate
from .cost_runs import RunComparison


# --- text output -----------------------------------------------------------------------------------


def _x(value: float | None) -> str:
    if value is None:
        return "-"
    return "inf" if math.isinf(value) else f"{value:.2f}x"


def format_context(n: int) -> str:
    """``131072 -> "128k"``, ``1000 -> "1000"``."""
    if n % (1 << 20) == 0:
        return f"{n >> 20}M"
    return f"{n >> 10}k" if n % 1024 == 0 else str(n)


def format_estimates(estimates: Sequence[Estimate]) -> str:
    """A table of estimates, one row per context length: ``alpha``, ``m/n``, ``a``, ``k/M``, ``R`` and the speedup."""
    header = f"{'context':>8} {'alpha':>7} {'m/n':>8} {'a':>6} {'k/M':>6} {'R':>7} {'speedup':>8}"
    lines = [header, "-" * len(header)]
    for e in estimates:
        lines.append(
            f"{format_context(e.context):>8} {e.alpha:>7.4f} {e.attended_fraction:>8.5f} {e.active_fraction:>6.3f} "
            f"{e.expert_fraction:>6.3f} {e.cost_ratio:>7.4f} {_x(e.speedup):>8}"
        )
    return "\n".join(lines)


def format_comparison(comparisons: Sequence[RunComparison]) -> str:
    """A table of :func:`compare_run`'s rows: the inputs, Qwen2's time to first token, and per model (bf16,
    W8ASpike) the theoretical speedup beside the measured one (``-`` where not measured)."""
    header = (
        f"{'context':>8} {'alpha':>7} {'m/n':>8} {'k/M':>6} {'qwen2 ms':>10} | {'bf16 theory':>11} {'measured':>9} "
        f"| {'a':>6} {'w8aspike theory':>15} {'measured':>9}"
    )
    lines = [header, "-" * len(header)]
    for c in comparisons:
        e = c.bf16
        qwen = "-" if c.qwen2_ttft_ms is None else f"{c.qwen2_ttft_ms:.1f}"
        a = "-" if c.w8aspike is None else f"{c.w8aspike.active_fraction:.3f}"
        w8_theory = None if c.w8aspike is None else c.w8aspike.speedup
        lines.append(
            f"{format_context(c.context):>8} {e.alpha:>7.4f} {e.attended_fraction:>8.5f} {e.expert_fraction:>6.3f} "
            f"{qwen:>10} | {_x(e.speedup):>11} {_x(c.measured_bf16):>9} | {a:>6} {_x(w8_theory):>15} "
            f"{_x(c.measured_w8aspike):>9}"
        )
    return "\n".join(lines)


__all__ = ["format_comparison", "format_context", "format_estimates"]
