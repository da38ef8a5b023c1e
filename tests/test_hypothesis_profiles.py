"""The suite's hypothesis set-up (tests/conftest.py): every run draws a fresh seed and prints it, a given
seed replays a run exactly, and the ``deep`` profile multiplies each test's own example budget.

Each case runs pytest in a subprocess on a two-test module beside a copy of the suite's conftest.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SAMPLE = '''
import os
from hypothesis import given, settings, strategies as st

def record(name, value):
    with open(os.path.join(os.environ["RECORD_DIR"], name), "a") as f:
        f.write(f"{value}\\n")

@given(st.integers(0, 2**60))
def test_default_budget(n):
    record("default", n)

@settings(max_examples=3)
@given(st.integers(0, 2**60))
def test_own_budget(n):
    record("own", n)

def test_not_a_property():
    pass
'''


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("suite")
    shutil.copy(Path(__file__).with_name("conftest.py"), root / "conftest.py")
    (root / "test_sample.py").write_text(SAMPLE)
    return root


def run(suite: Path, tmp_path: Path, *args: str, **env: str) -> tuple[str, dict[str, list[str]]]:
    record = tmp_path / f"record-{len(list(tmp_path.iterdir()))}"
    record.mkdir()
    environment = {k: v for k, v in os.environ.items() if k not in ("CI", "HYPOTHESIS_PROFILE", "SB_HYPOTHESIS_SEED")}
    environment.update(env, RECORD_DIR=str(record))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly", "--rootdir", str(suite),
         str(suite / "test_sample.py"), *args],
        capture_output=True, text=True, env=environment, cwd=suite, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    drawn = {p.name: p.read_text().split() for p in record.iterdir()}
    return result.stdout, drawn


def header_seed(stdout: str) -> tuple[str, str]:
    match = re.search(r"hypothesis: profile '(\w+)', seed (\d+) \(replay: python -m pytest --hypothesis-seed=\2", stdout)
    assert match, stdout
    return match.group(1), match.group(2)


def test_each_run_draws_a_new_seed_and_prints_it(suite, tmp_path):
    (profile_a, seed_a), drawn_a = (lambda out: (header_seed(out[0]), out[1]))(run(suite, tmp_path, CI="true"))
    (profile_b, seed_b), drawn_b = (lambda out: (header_seed(out[0]), out[1]))(run(suite, tmp_path, CI="true"))
    assert profile_a == profile_b == "default"  # CI runs what a newcomer runs
    assert seed_a != seed_b
    assert drawn_a["default"] != drawn_b["default"]  # not derandomized: CI draws new examples too


def test_a_given_seed_replays_the_run(suite, tmp_path):
    first, drawn_first = run(suite, tmp_path, "--hypothesis-seed=12345")
    again, drawn_again = run(suite, tmp_path, SB_HYPOTHESIS_SEED="12345")
    assert header_seed(first) == header_seed(again) == ("default", "12345")
    assert drawn_first == drawn_again


def test_deep_multiplies_every_tests_budget_and_marks_properties(suite, tmp_path):
    _, plain = run(suite, tmp_path)
    stdout, deep = run(suite, tmp_path, "-m", "property", "-v", HYPOTHESIS_PROFILE="deep")
    assert header_seed(stdout)[0] == "deep"
    assert len(plain["own"]) == 3 and len(deep["own"]) == 15
    assert len(plain["default"]) <= 60 < len(deep["default"]) <= 300
    assert "test_not_a_property" not in stdout  # deselected: no hypothesis in it
