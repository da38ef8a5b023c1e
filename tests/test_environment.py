"""The install must leave an environment where every host library imports next to ours.

Checked in a fresh interpreter: the known trap (a torchvision build that does not match torch) breaks
``import transformers`` only when it is the first to import torchvision.
"""

import importlib.metadata
import json
import os
import re
import subprocess
import sys
from pathlib import Path

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


# From the repository root the folders kernels/ and adapters/ answer to `import kernels` / `import adapters`,
# the names of HuggingFace's kernels (imported by transformers >= 5.25) and AdapterHub's adapters.
SHADOW_PROBE = """
import importlib.util, json, sys
out = {}
for name in ("kernels", "adapters"):
    try:
        module = __import__(name)
        out[name] = module.__file__
    except ModuleNotFoundError as error:
        out[name] = "missing: " + str(error)
import transformers
from transformers import PreTrainedModel
import sb_kernels, sb_adapters
out["sb_kernels"] = sb_kernels.__file__
out["has_spike_count_rows"] = hasattr(sb_kernels, "spike_count_rows")
print(json.dumps(out))
"""


def test_folder_names_never_shadow_the_distributions_that_own_them_from_the_repository_root():
    result = subprocess.run([sys.executable, "-c", SHADOW_PROBE], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["sb_kernels"] == str(ROOT / "kernels" / "__init__.py") and out["has_spike_count_rows"]
    owners = importlib.metadata.packages_distributions()
    for name in ("kernels", "adapters"):
        if set(owners.get(name, ())) - {"spikingbrain"}:  # another distribution owns the name: it gets it
            assert Path(out[name]).parent.parent.name == "site-packages", out
        else:
            assert out[name].startswith("missing: ") and f"import it as sb_{name}" in out[name], out
