"""The ``spikingbrain`` command line: ``spikingbrain --help``, ``demo``, ``estimate``, and sb_adapters'
``report`` / ``sweep-k`` (spiking injected into a HuggingFace model)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from sb_adapters.cli import positive_float, positive_int


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spikingbrain",
        description="SpikingBrain's adaptive-threshold spiking parts: demos and tools.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = sub.add_parser(
        "demo",
        help="spike-code synthetic LLM-like activations and report statistics, energy and plots",
        description=(
            "Spike-codes a reproducible heavy-tailed activation tensor at several k with every codec, "
            "prints a table (time steps, firing rate, sparsity, spikes per channel, silent channels, "
            "reconstruction error, energy against FP16/INT8 MACs), checks a spike-coded linear layer "
            "against its dense twin, and writes a spike raster and a count histogram. Then builds a small "
            "SpikingBrain model from sb_layers parts (seeded), generates from --prompt with a byte-level "
            "tokenizer, converts it to W8ASpike and prints its Fig. 9-style spike report."
        ),
    )
    demo.add_argument("--out", type=Path, default=Path("spikingbrain-demo"), help="output folder (default: %(default)s)")
    demo.add_argument("--k", type=positive_float, nargs="+", default=[1.0, 3.0, 8.0], help="threshold divisors k (default: %(default)s)")
    demo.add_argument("--tokens", type=positive_int, default=256, help="activation rows (default: %(default)s)")
    demo.add_argument("--features", type=positive_int, default=1024, help="activation columns (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    demo.add_argument("--prompt", default="Spiking neurons", help="prompt of the small model's generation (default: %(default)r)")
    demo.add_argument("--new-tokens", type=positive_int, default=24, help="tokens to generate (default: %(default)s)")
    demo.add_argument("--no-model", action="store_true", help="skip the small SpikingBrain model part")

    from sb_adapters.cli import add_parsers as add_adapter_parsers

    from .estimate import add_estimate_parser

    add_estimate_parser(sub)
    add_adapter_parsers(sub)  # "report" and "sweep-k": spiking injected into a HuggingFace model
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import run_demo

        run_demo(
            out=args.out, ks=args.k, tokens=args.tokens, features=args.features, seed=args.seed,
            prompt=None if args.no_model else args.prompt, new_tokens=args.new_tokens,
        )
        return 0
    if args.command == "estimate":
        from .estimate import run_estimate_command

        try:
            run_estimate_command(args)
        except ValueError as error:  # bad inputs: argparse's usage error (exit status 2), not a traceback
            parser.exit(2, f"{parser.prog} estimate: error: {error}\n")
        return 0
    if getattr(args, "sb_adapters_command", None):
        from sb_adapters.cli import run_command

        try:
            return run_command(args)
        except ValueError as error:
            parser.exit(2, f"{parser.prog} {args.command}: error: {error}\n")
    raise AssertionError(f"unhandled command {args.command}")  # argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
