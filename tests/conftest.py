"""Shared pytest configuration: hypothesis profiles and seeds, the ``property`` and ``gpu`` markers.

Profiles (``HYPOTHESIS_PROFILE`` picks one):

- ``default``: what everyone runs, a newcomer and CI alike (``CI`` set or not): 60 examples per property
  test unless the test asks for another number, no deadline (CI machines are slow and shared).
- ``deep``: every property test runs ``DEEP_SCALE`` times the examples it runs by default (its own
  ``@settings(max_examples=...)`` included), for hunting rare failures: ``scripts/deep-tests.sh``.

Neither is derandomized: every run draws new examples. The seed of the run is printed in pytest's
header; ``--hypothesis-seed=N`` (or ``SB_HYPOTHESIS_SEED=N``) replays it, and the failing example itself
is printed, to be kept as an ``@example`` of its test. Hypothesis tests carry the ``property`` marker
(``-m property`` selects them).
"""

import importlib.util
import os
import random

import pytest
import torch
from hypothesis import HealthCheck, is_hypothesis_test, settings


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

SEED_VARIABLE = "SB_HYPOTHESIS_SEED"
EXAMPLES = 60
DEEP_SCALE = 5
_SLOW_IS_FINE = [HealthCheck.too_slow, HealthCheck.data_too_large]

# derandomize=False said explicitly: where CI is set, the default that profiles registered here inherit
# from is hypothesis' own "ci" profile, which is derandomized (it would prove one fixed sample forever).
settings.register_profile(
    "default", max_examples=EXAMPLES, deadline=None, derandomize=False, suppress_health_check=_SLOW_IS_FINE
)
settings.register_profile(
    "deep", max_examples=EXAMPLES * DEEP_SCALE, deadline=None, derandomize=False,
    suppress_health_check=[*_SLOW_IS_FINE, HealthCheck.filter_too_much],
)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "default")
settings.load_profile(PROFILE)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    """Fix the run's seed before hypothesis' plugin reads it: the ``--hypothesis-seed`` given, else
    ``SB_HYPOTHESIS_SEED``, else a fresh random one. Passed on through the environment, so that
    pytest-xdist's workers (started later, from this process) use the same seed."""
    config.addinivalue_line("markers", "property: a hypothesis property test (marked automatically)")
    seed = config.getoption("hypothesis_seed", None) or os.environ.get(SEED_VARIABLE)
    if seed is None:
        seed = str(random.SystemRandom().randrange(2**32))
    config.option.hypothesis_seed = os.environ[SEED_VARIABLE] = str(seed)


def pytest_report_header(config):
    seed = config.option.hypothesis_seed
    return f"hypothesis: profile {PROFILE!r}, seed {seed} (replay: python -m pytest --hypothesis-seed={seed} ...)"


def pytest_collection_modifyitems(config, items):
    scaled = set()
    skip_gpu = None if torch.cuda.is_available() else pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        test = getattr(item, "obj", None)
        if is_hypothesis_test(test):
            item.add_marker(pytest.mark.property)
            if PROFILE == "deep" and id(test) not in scaled:  # parametrized items share one function
                scaled.add(id(test))
                _scale_examples(test, DEEP_SCALE)
        if skip_gpu is not None and "gpu" in item.keywords:
            item.add_marker(skip_gpu)


def _scale_examples(test, factor: int) -> None:
    """``factor`` times the examples a test runs by default: a test's own ``@settings(max_examples=n)``
    takes precedence over any profile, so the deep profile alone would not deepen it."""
    own = test._hypothesis_internal_use_settings
    examples = own.max_examples if own.max_examples != settings.default.max_examples else EXAMPLES
    test._hypothesis_internal_use_settings = settings(own, max_examples=examples * factor)


@pytest.fixture(scope="module")
def single_thread():
    """One intra-op thread for a module of tiny-model tests: their matmuls are too small to share, and
    threads only add synchronization (which stalls badly on a loaded two-core runner). Modules ask for
    it with ``pytestmark = pytest.mark.usefixtures("single_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def float64_default():
    """float64 as torch's default dtype during each test (restored after it), where exactness claims are
    checked in float64. Modules ask for it with ``pytestmark = pytest.mark.usefixtures("float64_default")``."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)
