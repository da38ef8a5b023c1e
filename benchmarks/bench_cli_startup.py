"""How fast the command line answers ``--help`` and a bad path: the best of ``--repeat`` runs each, as a user
runs the installed command (a new interpreter every time). Goal: under a second (it was 6-7 s when the
parsers imported torch and transformers; tests/cli/test_startup.py checks that they import neither).

    python benchmarks/bench_cli_startup.py
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

COMMANDS = (["--help"], ["report", "--model", "/nonexistent/dir"], ["generate", "--model", "/nonexistent/dir"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    baseline = min(_run([sys.executable, "-c", "pass"]) for _ in range(args.repeat))
    print(f"a bare interpreter: {baseline * 1e3:.0f} ms (the floor of every row)\n")
    print("| command | best of runs (ms) | x bare interpreter |\n|---|---|---|")
    for argv in COMMANDS:
        best = min(_run([sys.executable, "-m", "spikingbrain.cli", *argv]) for _ in range(args.repeat))
        print(f"| spikingbrain {' '.join(argv)} | {best * 1e3:.0f} | {best / baseline:.1f}x |")


def _run(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, capture_output=True, text=True, timeout=120)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
