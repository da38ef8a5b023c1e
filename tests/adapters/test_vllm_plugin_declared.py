"""The vLLM plugin as the main environment sees it (no vLLM installed): declared as an entry point, and
importing our packages, the plugin's package included, imports no vLLM. Its behaviour is tested in
tests/vllm_plugin/, in the vLLM environment (scripts/test.sh)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_plugin_is_declared_under_vllms_entry_point_group():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["entry-points"]["vllm.general_plugins"] == {"spikingbrain": "sb_adapters.vllm.register:register"}
    assert any(req.startswith("vllm") for req in project["optional-dependencies"]["vllm"])


def test_importing_our_packages_and_the_plugin_imports_no_vllm():
    probe = (
        "import sys, sb_neurons, sb_kernels, sb_layers, sb_adapters, sb_adapters.vllm, spikingbrain.cli\n"
        "from sb_adapters.vllm import ARCHITECTURES, register\n"
        "assert ARCHITECTURES == ('GLAswaForCausalLM', 'SpikingBrainForCausalLM')\n"
        "print(sorted(m for m in sys.modules if m == 'vllm' or m.startswith('vllm.')))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]", result.stdout
