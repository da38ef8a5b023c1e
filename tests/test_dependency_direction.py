"""Dependencies point one way (docs/architecture.md, "Dependency direction"): sb_neurons -> sb_kernels ->
sb_layers -> sb_adapters -> spikingbrain. Every module of the five packages is parsed (ast, imports inside
functions included) and none may import a package later in that order, nor another package's private
(underscore) module or name.

The one documented exception: ``adapters/sb_adapters/__main__.py``, the ``python -m sb_adapters`` script entry point,
runs ``spikingbrain.cli``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# import name -> (folder, rank in the dependency order)
PACKAGES = {"sb_neurons": ("sb_neurons", 0), "sb_kernels": ("kernels/sb_kernels", 1), "sb_layers": ("sb_layers", 2),
            "sb_adapters": ("adapters/sb_adapters", 3), "spikingbrain": ("spikingbrain", 4)}
EXCEPTIONS = {("adapters/sb_adapters/__main__.py", "spikingbrain.cli"): "script entry point of python -m sb_adapters"}


def _modules():
    for package, (folder, _) in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            yield package, path


def _module_name(package: str, path: Path) -> list[str]:
    folder = PACKAGES[package][0]
    parts = [package, *path.relative_to(ROOT / folder).with_suffix("").parts]
    return parts[:-1] if parts[-1] == "__init__" else parts


def _imports(package: str, path: Path):
    """``(line, module, names)`` for every import of the file, relative imports made absolute."""
    here = _module_name(package, path)
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, ()
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here if is_package else here[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            yield node.lineno, module, tuple(alias.name for alias in node.names)


def _private(part: str) -> bool:
    return part.startswith("_") and not part.startswith("__")


def _violations(package: str, path: Path) -> list[str]:
    rank = PACKAGES[package][1]
    relative = path.relative_to(ROOT).as_posix()
    found = []
    for line, module, names in _imports(package, path):
        top = module.split(".")[0]
        if top not in PACKAGES or top == package:
            continue
        where = f"{relative}:{line}: {package} imports {module}"
        if PACKAGES[top][1] > rank and (relative, module) not in EXCEPTIONS:
            found.append(f"{where} (against the direction sb_neurons -> sb_kernels -> sb_layers -> sb_adapters -> spikingbrain)")
        private = [part for part in module.split(".")[1:] if _private(part)] + [name for name in names if _private(name)]
        if private:
            found.append(f"{where} ({', '.join(private)}: another package's private module or name; make it public)")
    return found


def test_every_package_module_is_scanned():
    scanned = {path.relative_to(ROOT).as_posix() for _, path in _modules()}
    assert {"sb_neurons/spike.py", "kernels/sb_kernels/gla/reference.py", "sb_layers/linear_attention.py", "adapters/sb_adapters/__main__.py",
            "spikingbrain/cli.py"} <= scanned


def test_imports_follow_the_dependency_direction_and_skip_private_modules():
    found = [v for package, path in _modules() for v in _violations(package, path)]
    assert found == [], "\n".join(found)


def test_the_order_is_the_one_docs_architecture_states():
    """The page a maintainer reads shows the same order as the checker enforces."""
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    order = sorted(PACKAGES, key=lambda package: PACKAGES[package][1])
    assert "  <-  ".join(order) in page


def test_the_exceptions_are_still_needed():
    """An exception that no import uses any more is removed from the list."""
    used = {(path.relative_to(ROOT).as_posix(), module) for package, path in _modules() for _, module, _ in _imports(package, path)}
    assert set(EXCEPTIONS) <= used


@pytest.mark.parametrize(
    "source, package, expected",
    [
        ("from sb_layers import GatedLinearAttention\n", "sb_kernels", "against the direction"),
        ("def f():\n    import sb_adapters.injector\n", "sb_layers", "against the direction"),
        ("from sb_kernels._dispatch import needs_grad\n", "sb_layers", "_dispatch"),
        ("from sb_neurons.spike import _private_helper\n", "sb_kernels", "_private_helper"),
        ("from ..spike_quant import quantize_rows\nfrom . import _tiles\n", "sb_kernels", None),
    ],
)
def test_the_checker_catches_what_it_should(tmp_path, monkeypatch, source, package, expected):
    folder = tmp_path / PACKAGES[package][0] / "sub"
    folder.mkdir(parents=True)
    (folder / "mod.py").write_text(source)
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    found = _violations(package, folder / "mod.py")
    if expected is None:
        assert found == []
    else:
        assert len(found) == 1 and expected in found[0]


def _layer_modules() -> dict[str, Path]:
    """Every module of sb_layers by dotted name (a package by its own name)."""
    return {".".join(_module_name("sb_layers", path)): path for _, path in _modules() if _ == "sb_layers"}


def _import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """``module -> the sb_layers modules it imports`` (imports inside functions included; ``from package
    import submodule`` counts as an import of the submodule; a package's ``__init__`` is not counted as a
    dependency of its own submodules, which Python imports first anyway)."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for _, module, names in _imports("sb_layers", path):
            targets = [module] + [f"{module}.{n}" for n in names]
            edges |= {t for t in targets if t in modules and t != name and not name.startswith(t + ".")}
        graph[name] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circle_among_sb_layers_modules():
    """No two sb_layers modules import each other, directly or around a longer loop, at module level or
    inside a function (an import inside a function is how a circle hides)."""
    cycles = _cycles(_import_graph(_layer_modules()))
    assert cycles == [], "import circles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_circle_checker_catches_a_lazy_circle():
    graph = {"sb_layers.a": {"sb_layers.b"}, "sb_layers.b": {"sb_layers.a"}, "sb_layers.c": {"sb_layers.a"}}
    assert _cycles(graph) == [["sb_layers.a", "sb_layers.b"]]
    assert _cycles({"sb_layers.a": {"sb_layers.b"}, "sb_layers.b": set()}) == []


def test_every_sb_layers_module_imports_first_in_a_fresh_interpreter():
    """Each module imported first, before any other sb_layers module (an import order that a circle would
    break): one fresh interpreter, which forgets every sb_layers module between two imports (torch and
    transformers stay loaded, so this takes seconds)."""
    names = sorted(_layer_modules())
    script = (
        "import importlib, sys, traceback\n"
        "import torch, transformers\n"
        "bad = []\n"
        "for name in sys.argv[1:]:\n"
        "    for loaded in [m for m in sys.modules if m == 'sb_layers' or m.startswith('sb_layers.')]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception:\n"
        "        bad.append(name + ': ' + traceback.format_exc().strip().splitlines()[-1])\n"
        "print('\\n'.join(bad))\n"
        "sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", script, *names], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
