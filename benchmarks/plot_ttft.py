"""Log-log plot of TTFT against context length from a ``ttft.py`` JSON (one line per model).

    python benchmarks/plot_ttft.py ttft.json docs/performance-ttft.png
"""

from __future__ import annotations

import json
import sys


def main(argv=None) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    source, target = (argv or sys.argv[1:])[:2]
    run = json.loads(open(source).read())
    fig, ax = plt.subplots(figsize=(5.2, 3.6), dpi=100)
    for name, style in (("qwen2", "s-"), ("spikingbrain-bf16", "o-"), ("spikingbrain-w8aspike", "^--")):
        rows = sorted((r["context"], r["ttft_ms"]) for r in run["rows"] if r["model"] == name and r["ttft_ms"])
        if rows:
            ax.loglog([c for c, _ in rows], [t / 1e3 for _, t in rows], style, label=name, base=2)
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("time to first token (s)")
    ax.set_title(run["device"].split(" (")[0], fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(target)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
