"""The install must leave an environment where every host library imports next to ours.

Checked in a fresh interpreter: the known trap (a torchvision build that does not match torch) breaks
``import transformers`` only when it is the first to import torchvision.
"""

import json
import subprocess
import sys

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
