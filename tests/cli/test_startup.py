"""``spikingbrain --help`` and a usage error come at once (issue "What new users tripped over", 10): the
parsers import neither torch nor transformers nor the libraries (their choices and defaults are copied
into spikingbrain.constants, checked here against the libraries). How long they take is measured by
benchmarks/bench_cli_startup.py, not by a timed test."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest

import spikingbrain.constants as constants

HEAVY = ("torch", "transformers", "numpy", "huggingface_hub", "sb_neurons", "sb_kernels", "sb_layers", "sb_adapters")

# the user's commands: the help texts, and the bad paths of the issue (rejected while parsing)
COMMANDS = [
    ["--help"],
    ["report", "--help"],
    ["sweep-k", "--help"],
    ["estimate", "--help"],
    ["demo", "--help"],
    ["report", "--model", "/nonexistent/dir"],
    ["report", "--tiny", "gpt2", "--config", "/nonexistent"],
    ["sweep-k", "--model", "./no/such/model"],
    ["estimate", "--run", "/nonexistent.json"],
    ["estimate", "--config", "/nonexistent/config.json"],
]


def test_the_copied_values_are_the_libraries():
    from sb_adapters.config import CONFIG_NAME, STATE_NAME
    from sb_adapters.sweep import DEFAULT_KS
    from sb_adapters.tiny import TINY_ARCHS
    from sb_layers import SpikeCoding
    from sb_layers.models.spikingbrain import cost_model
    from sb_neurons import CODEC_NAMES

    assert constants.TINY_ARCHS == TINY_ARCHS
    assert constants.CODEC_NAMES == CODEC_NAMES
    assert constants.DEFAULT_CODEC == SpikeCoding().codec
    assert constants.DEFAULT_KS == DEFAULT_KS
    assert (constants.CONFIG_NAME, constants.STATE_NAME) == (CONFIG_NAME, STATE_NAME)
    assert constants.PHASES == cost_model.PHASES
    assert constants.SHAPE_7B == dataclasses.asdict(cost_model.ModelShape())


@pytest.mark.parametrize("argv", COMMANDS, ids=" ".join)
def test_parsing_imports_no_library(argv):
    """``main(argv)`` up to the help text or the usage error, in a fresh interpreter: nothing heavy imported."""
    script = (
        "import sys\n"
        "from spikingbrain.cli import main\n"
        "try:\n"
        "    main(sys.argv[1:])\n"
        "except SystemExit as exit:\n"
        "    code = exit.code\n"
        f"heavy = sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))\n"
        "print('HEAVY', heavy, 'CODE', code, file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    last = result.stderr.strip().splitlines()[-1]
    expected_code = 0 if argv[-1] == "--help" else 2
    assert last == f"HEAVY [] CODE {expected_code}", result.stderr
