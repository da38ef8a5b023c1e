"""The ``spikingbrain`` command line, the project's one entry point: ``spikingbrain --help``, ``demo``
(:mod:`spikingbrain.demo`), ``estimate`` (:mod:`spikingbrain.estimate`), ``report`` / ``sweep-k``
(:mod:`spikingbrain.inject`: spiking injected into a HuggingFace model) and ``generate``
(:mod:`spikingbrain.generate`: a SpikingBrain-7B checkpoint from a local folder). ``python -m sb_adapters
...`` is an alias (the same parser).

Every argument that names a file or folder is checked while the command line is parsed, before any work
starts (the path types of :mod:`spikingbrain.arguments`); bad values and inputs are usage errors: one
line, ``spikingbrain COMMAND: error: ...``, naming the argument, exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from .arguments import HelpFormatter, output_dir, positive_float, positive_int

DESCRIPTION = """\
SpikingBrain's adaptive-threshold spiking parts: demos and tools. Run `spikingbrain COMMAND --help` for
a command's description, its options and their defaults. (`python -m sb_adapters ...` is an alias of
`spikingbrain ...`.)"""


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser whose usage errors are one line, ``PROG: error: MESSAGE (see PROG --help)``,
    exit status 2 (the usage block is in ``--help``). Subcommand parsers are of the same class."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="spikingbrain", description=DESCRIPTION, formatter_class=HelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = sub.add_parser(
        "demo",
        help="spike-code synthetic LLM-like activations and report statistics, energy and plots",
        formatter_class=HelpFormatter,
        description=(
            "Spike-codes a reproducible heavy-tailed activation tensor at several k with every codec,\n"
            "prints a table (time steps, firing rate, sparsity, spikes per channel, silent channels,\n"
            "reconstruction error, energy against FP16/INT8 MACs), checks a spike-coded linear layer\n"
            "against its dense twin, and writes a spike raster and a count histogram into --out. Then\n"
            "injects spiking into a tiny HuggingFace model, builds a small SpikingBrain model from\n"
            "sb_layers parts (seeded), generates from --prompt with a byte-level tokenizer, converts it\n"
            "to W8ASpike and prints its Fig. 9-style spike report (and writes spike_report.png).\n\n"
            "--out is checked before anything runs: it must be a folder that exists or can be created,\n"
            "and is writable."
        ),
    )
    demo.add_argument("--out", type=output_dir, default="spikingbrain-demo", metavar="DIR", help="output folder for the plots (created if missing)")
    demo.add_argument("--k", type=positive_float, nargs="+", default=[1.0, 3.0, 8.0], help="threshold divisors k")
    demo.add_argument("--tokens", type=positive_int, default=256, help="activation rows")
    demo.add_argument("--features", type=positive_int, default=1024, help="activation columns")
    demo.add_argument("--seed", type=int, default=0, help="random seed")
    demo.add_argument("--prompt", default="Spiking neurons", help="prompt of the small model's generation (default: %(default)r)")
    demo.add_argument("--new-tokens", type=positive_int, default=24, help="tokens to generate")
    demo.add_argument("--no-model", action="store_true", help="skip the small SpikingBrain model part")

    from .estimate import add_estimate_parser
    from .generate import add_generate_parser
    from .inject import add_parsers as add_inject_parsers

    add_estimate_parser(sub)
    add_inject_parsers(sub)  # "report" and "sweep-k": spiking injected into a HuggingFace model
    add_generate_parser(sub)  # "generate": a SpikingBrain-7B checkpoint from a local folder
    return parser


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``) and run the command; returns the exit status.
    Usage errors (bad values, unusable paths, bad inputs found before the work) exit with status 2."""
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
            parser.exit(2, f"{parser.prog} estimate: error: {_one_line(error)}\n")
        return 0
    if args.command == "generate":
        from .generate import run_generate_command

        try:
            return run_generate_command(args)
        except ValueError as error:  # no such device, too little memory, a checkpoint that does not fit
            parser.exit(2, f"{parser.prog} generate: error: {_one_line(error)}\n")
    if getattr(args, "inject_command", None):
        from .inject_run import run_command

        try:
            return run_command(args)
        except (ValueError, TypeError) as error:
            parser.exit(2, f"{parser.prog} {args.command}: error: {_one_line(error)}\n")
    raise AssertionError(f"unhandled command {args.command}")  # argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
