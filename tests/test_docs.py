"""Docs cannot rot: every ```python block of every page (and of the README) runs, and the site builds."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]
PYTHON_BLOCK = re.compile(r"^```python[^\n]*\n(.*?)^```", re.DOTALL | re.MULTILINE)


def python_blocks(page: Path) -> list[str]:
    return PYTHON_BLOCK.findall(page.read_text(encoding="utf-8"))


def test_every_page_is_collected():
    assert any(p.name == "index.md" for p in PAGES)
    assert python_blocks(ROOT / "docs" / "index.md"), "the front page should show runnable code"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_code_blocks_run(page: Path, tmp_path, monkeypatch):
    """Blocks of one page run in order in one namespace, from a scratch working directory."""
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for index, block in enumerate(python_blocks(page)):
        code = compile(block, f"{page.name}[block {index}]", "exec")
        exec(code, namespace)  # noqa: S102 - executing our own documentation is the point


@pytest.mark.skipif(shutil.which("mkdocs", path=str(Path(sys.executable).parent)) is None, reason="docs extra not installed")
def test_site_builds_strict(tmp_path):
    mkdocs = str(Path(sys.executable).parent / "mkdocs")
    result = subprocess.run(
        [mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- the reference lists every public name (issue "What new users tripped over", 10) ------------------

FACES = ("sb_neurons", "sb_kernels", "sb_layers", "sb_layers.models.spikingbrain", "sb_adapters")
"""The packages whose ``__all__`` is the public API."""


def reference_modules() -> set[str]:
    return set(re.findall(r"^::: (\S+)\s*$", (ROOT / "docs" / "reference.md").read_text(encoding="utf-8"), re.MULTILINE))


def defining_module(obj: object) -> str | None:
    import inspect

    obj = inspect.unwrap(obj) if callable(obj) else obj
    obj = obj.__func__ if inspect.ismethod(obj) else obj  # a classmethod: the function the class defines
    return obj.__module__ if inspect.isclass(obj) or inspect.isfunction(obj) else None  # constants: their module's text


def _check_listed(name: str, module_name: str, listed: set[str]) -> list[str]:
    import importlib

    module = importlib.import_module(module_name)
    problems = [] if module_name in listed else [f"{name}: its module {module_name} is not in docs/reference.md"]
    if hasattr(module, "__all__") and name.split(".")[0] not in module.__all__:
        problems.append(f"{name}: not in {module_name}.__all__ (mkdocstrings renders a module's __all__)")
    return problems


def test_the_reference_lists_the_module_of_every_public_name():
    import importlib

    listed, problems = reference_modules(), []
    for face in FACES:
        package = importlib.import_module(face)
        for name in package.__all__:
            module = defining_module(getattr(package, name))
            if module is not None:
                problems += _check_listed(name, module, listed)
    assert problems == []


@pytest.mark.parametrize(
    "name, module",
    [
        ("to_w8aspike", "sb_layers.models.spikingbrain.w8aspike"),
        ("SpikingBrainForCausalLM.from_qwen2", "sb_layers.models.spikingbrain.modeling"),
        ("continual_pretrain", "sb_layers.models.spikingbrain.convert"),
        ("upcycle_to_moe", "sb_layers.models.spikingbrain.upcycling"),
        ("reset_spike_stats", "sb_layers.report"),
    ],
)
def test_the_names_the_issue_missed_are_in_the_reference(name, module):
    import importlib

    obj = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    assert defining_module(obj) == module
    assert _check_listed(name, module, reference_modules()) == []


def test_the_7b_tutorial_leaves_no_temporary_folder(tmp_path, monkeypatch):
    """The tutorial wrote a released checkpoint into tempfile.mkdtemp() and left it there."""
    import tempfile

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__docs__"}
    page = ROOT / "docs" / "tutorials" / "spikingbrain-7b.md"
    for index, block in enumerate(python_blocks(page)):
        exec(compile(block, f"{page.name}[block {index}]", "exec"), namespace)  # noqa: S102
    assert sorted(p.name for p in scratch.iterdir()) == []
