"""The install must leave an environment where every host library imports next to ours.

Run in a fresh interpreter: the known trap (a torchvision build that does not match torch) breaks
``import transformers`` only when it is the first to import torchvision.
"""

import subprocess
import sys

import pytest

IMPORTS = {
    "transformers": "import transformers",
    "peft": "import peft",
    "snntorch": "import snntorch",
    "spikingjelly": "from spikingjelly.activation_based import neuron, functional, surrogate, layer, monitor",
    "sb_packages": "import sb_neurons, sb_kernels, sb_layers, sb_adapters",
}


@pytest.mark.parametrize("name", list(IMPORTS))
def test_imports_in_fresh_interpreter(name):
    result = subprocess.run([sys.executable, "-c", IMPORTS[name]], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def test_all_hosts_import_together():
    code = "; ".join(IMPORTS.values()) + "; import peft.tuners; from transformers import GPT2Config"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
