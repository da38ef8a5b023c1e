"""The project's set-up contract (issue 2): packaging metadata, the README's two commands, CI, profiles.

These checks read the repository's own files, so a change that breaks what a newcomer runs (a third
set-up command, CI drifting from the README, a subpackage left out of wheels) fails here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch
from hypothesis import settings
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
FENCED = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.DOTALL | re.MULTILINE)


def shell_blocks(path: Path) -> list[str]:
    """The ``bash``/``sh``/``console`` fenced blocks of a Markdown file, stripped."""
    return [body.strip() for lang, body in FENCED.findall(path.read_text(encoding="utf-8")) if lang in ("bash", "sh", "shell", "console")]


def readme_commands() -> tuple[str, str]:
    blocks = shell_blocks(ROOT / "README.md")
    assert len(blocks) == 2, f"the README must show exactly two set-up commands, found {len(blocks)}: {blocks}"
    for block in blocks:
        assert len(block.splitlines()) == 1, f"each set-up command must be one line: {block!r}"
    return blocks[0], blocks[1]


def test_readme_has_exactly_two_setup_commands_demo_then_tests():
    demo, tests = readme_commands()
    for command in (demo, tests):
        assert command.startswith("bash scripts/install.sh && "), command
    assert demo.endswith("spikingbrain demo"), demo
    assert tests.endswith("bash scripts/test.sh"), tests


def test_the_test_script_runs_the_main_suite_and_the_vllm_tests_in_two_pytest_processes():
    """scripts/test.sh: the main suite in .venv, then tests/vllm_plugin in .venv-vllm, required (never skipped)."""
    commands = [line.strip() for line in (ROOT / "scripts" / "test.sh").read_text().splitlines() if line.strip() and not line.strip().startswith("#")]
    main = [line for line in commands if line.startswith(".venv/bin/python -m pytest")]
    vllm = [line for line in commands if ".venv-vllm/bin/python -m pytest tests/vllm_plugin" in line]
    assert len(main) == 1 and len(vllm) == 1, commands
    assert "SB_REQUIRE_VLLM=1" in vllm[0] and " -n " not in vllm[0], vllm[0]
    assert commands.index(main[0]) < commands.index(vllm[0])
    assert commands[-1] == 'exit "$status"', "a failure of either run must fail the script"


def test_ci_runs_the_readmes_test_command():
    _, tests = readme_commands()
    script = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    commands = [line for line in script if line and not line.startswith("#")]
    assert commands[-1] == tests, f".ci/run must end with the README's test command {tests!r}, got {commands[-1]!r}"
    assert os.access(ROOT / ".ci" / "run", os.X_OK), ".ci/run must be executable"


def test_installation_page_shows_the_same_two_commands():
    assert shell_blocks(ROOT / "docs" / "installation.md")[:2] == list(readme_commands())


def test_shell_scripts_parse():
    for script in (*sorted((ROOT / "scripts").glob("*.sh")), ROOT / ".ci" / "run"):
        result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, f"{script.name}: {result.stderr}"


def test_every_package_directory_is_packaged():
    """A subpackage missing from ``[tool.setuptools] packages`` silently drops out of wheels."""
    tool = PYPROJECT["tool"]["setuptools"]
    listed = set(tool["packages"])
    package_dir = tool["package-dir"]
    found = set()
    for top, folder in package_dir.items():
        base = ROOT / folder
        assert (base / "__init__.py").is_file(), f"{top} -> {folder} has no __init__.py"
        for init in base.rglob("__init__.py"):
            relative = init.parent.relative_to(base)
            found.add(".".join((top, *relative.parts)))
    assert listed == found, f"missing from pyproject: {sorted(found - listed)}; listed but absent: {sorted(listed - found)}"


def test_distribution_metadata_follows_issue_2():
    project = PYPROJECT["project"]
    assert project["name"] == "spikingbrain"
    assert project["requires-python"] == ">=3.11"
    for licence in project["license-files"]:
        assert (ROOT / licence).is_file() and (ROOT / licence).stat().st_size > 1000
    names = {Requirement(r).name for r in project["dependencies"]}
    assert {"torch", "transformers", "peft", "spikingjelly", "snntorch", "triton", "numpy", "matplotlib", "tqdm"} <= names
    transformers = next(Requirement(r) for r in project["dependencies"] if Requirement(r).name == "transformers")
    assert "5.12.1" not in transformers.specifier and "5.13.0" in transformers.specifier
    extras = project["optional-dependencies"]
    assert {Requirement(r).name for r in extras["test"]} >= {"pytest", "hypothesis"}
    assert {Requirement(r).name for r in extras["docs"]} >= {"mkdocs-material", "mkdocstrings"}
    assert {Requirement(r).name for r in extras["gpu"]} >= {"flash-linear-attention"}


def test_installed_torch_satisfies_the_declared_range():
    torch_req = next(Requirement(r) for r in PYPROJECT["project"]["dependencies"] if Requirement(r).name == "torch")
    installed = Version(torch.__version__.split("+")[0])
    assert installed in torch_req.specifier
    assert Version("2.13.0") in torch_req.specifier, "the CPU torch 2.13.0 of the project's machines must satisfy it"


def test_console_command_points_at_the_cli():
    assert PYPROJECT["project"]["scripts"]["spikingbrain"] == "spikingbrain.cli:main"
    matches = [ep for ep in entry_points(group="console_scripts") if ep.name == "spikingbrain"]
    if not matches:
        pytest.skip("spikingbrain is not installed in this environment (run scripts/install.sh)")
    from spikingbrain.cli import main

    assert matches[0].load() is main


def test_hypothesis_profiles_default_and_deep():
    default, deep = settings.get_profile("default"), settings.get_profile("deep")
    assert default.deadline is None and deep.deadline is None
    assert not default.derandomize and not deep.derandomize  # CI draws new examples, as a newcomer does
    assert deep.max_examples > default.max_examples > 0
    active = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
    assert settings.default.max_examples == active.max_examples
    assert settings.default.deadline == active.deadline


@pytest.mark.parametrize(
    "package, forbidden",
    [
        ("sb_neurons", ("transformers", "peft", "spikingjelly", "snntorch", "triton", "sb_layers", "sb_kernels", "sb_adapters")),
        ("sb_layers", ("sb_adapters", "spikingjelly", "snntorch", "peft")),
    ],
)
def test_dependencies_point_one_way(package, forbidden):
    """docs/architecture.md (dependency direction): neurons <- kernels <- layers <- adapters; sb_neurons needs torch only."""
    probe = f"import sys, {package}; print(sorted(m for m in {forbidden!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]", f"importing {package} pulled in {result.stdout.strip()}"
