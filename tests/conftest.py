"""Shared pytest configuration: hypothesis profiles and the GPU marker.

Profiles: ``ci`` (bounded examples, no deadline: CI machines are slow and shared) is selected when the
environment variable ``CI`` is set; ``dev`` otherwise. ``HYPOTHESIS_PROFILE`` overrides both.
"""

import importlib.util
import os

import pytest
import torch
from hypothesis import HealthCheck, settings


def _import_triton_for_its_interpreter() -> None:
    """Without CUDA, import Triton once with ``TRITON_INTERPRET=1``, then restore the variable.

    Triton builds its standard library (``tl.sum``, ``tl.max``, ...) for the interpreter only when the
    variable is set at import time; kernels launched later on CPU tensors then run interpreted. The
    variable itself is restored at once, so only tests that ask for the interpreter (the
    ``triton_interpreter`` fixture of tests/kernel_testing.py) see it and the rest of the suite keeps
    the default dispatch rules.
    """
    if torch.cuda.is_available() or importlib.util.find_spec("triton") is None:
        return
    previous = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        import triton.language  # noqa: F401
    finally:
        if previous is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = previous


_import_triton_for_its_interpreter()

settings.register_profile(
    "ci",
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", max_examples=60, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="module")
def single_thread():
    """One intra-op thread for a module of tiny-model tests: their matmuls are too small to share, and
    threads only add synchronization (which stalls badly on a loaded two-core runner). Modules ask for
    it with ``pytestmark = pytest.mark.usefixtures("single_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
