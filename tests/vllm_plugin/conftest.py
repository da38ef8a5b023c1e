"""tests/vllm_plugin runs in the vLLM environment (.venv-vllm, scripts/install-vllm.sh), in a pytest process of its
own (scripts/test.sh): vLLM pins transformers below what .venv holds, and pins its engine to one core.

Where vLLM is not installed (the main environment) pytest does not collect these modules. Where the
vLLM tests are required (``SB_REQUIRE_VLLM=1``, set by scripts/test.sh) a missing vLLM is an error, so
that CI cannot pass by skipping them.
"""

from __future__ import annotations

import importlib.util
import os

# A namespace portion named vllm (a folder on sys.path without __init__.py) has no origin: not vLLM.
_spec = importlib.util.find_spec("vllm")
HAVE_VLLM = _spec is not None and _spec.origin is not None

if not HAVE_VLLM:
    if os.environ.get("SB_REQUIRE_VLLM") == "1":
        raise RuntimeError("SB_REQUIRE_VLLM=1 but vllm is not importable: run scripts/install-vllm.sh and use .venv-vllm/bin/python")
    collect_ignore_glob = ["test_*.py"]
