"""Log-log plot of TTFT against context length from ``ttft.py`` JSONs (one line per model).

    python benchmarks/plot_ttft.py ttft.json docs/performance-ttft.png
    python benchmarks/plot_ttft.py ttft.json ttft512k.json docs/performance-ttft.png  # runs merged

With several runs, a (model, context) measured twice takes the later file's figure; the runs should come
from one device (the title names the first run's).
"""

from __future__ import annotations

import json
import sys


def main(argv=None) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    args = argv or sys.argv[1:]
    if len(args) < 2:
        raise SystemExit("usage: plot_ttft.py RUN.json [RUN.json ...] OUT.png")
    *sources, target = args
    runs = [json.loads(open(source).read()) for source in sources]
    measured = {(r["model"], r["context"]): r["ttft_ms"] for run in runs for r in run["rows"] if r["ttft_ms"]}
    fig, ax = plt.subplots(figsize=(5.2, 3.6), dpi=100)
    for name, style in (("qwen2", "s-"), ("qwen2-cudnn", "s:"), ("spikingbrain-bf16", "o-"), ("spikingbrain-w8aspike", "^--")):
        rows = sorted((context, ms) for (model, context), ms in measured.items() if model == name)
        if rows:
            ax.loglog([c for c, _ in rows], [t / 1e3 for _, t in rows], style, label=name, base=2)
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("time to first token (s)")
    ax.set_title(runs[0]["device"].split(" (")[0], fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(target)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
