"""Shared by the cost-model tests (tests/models/test_cost_model.py) and those of its command line
(tests/cli/test_estimate.py): a ``benchmarks/ttft.py`` run with made-up timings, and its file."""

from __future__ import annotations

import json

import pytest


def fixture_run() -> dict:
    """The schema benchmarks/ttft.py writes, with made-up timings (an OOM at the longest Qwen2 context)."""
    rows = []
    for context, qwen, ours, w8 in ((4096, 112.0, 100.0, 80.0), (32768, 1175.0, 587.5, None), (131072, 9372.0, 2343.0, 1800.0), (524288, None, 9000.0, None)):
        rows += [
            {"model": "qwen2", "context": context, "ttft_ms": qwen, "peak_mem_gib": None if qwen is None else 20.0},
            {"model": "qwen2-cudnn", "context": context, "ttft_ms": 1.5 * ours, "peak_mem_gib": None},  # not the baseline
            {"model": "spikingbrain-bf16", "context": context, "ttft_ms": ours, "peak_mem_gib": 18.5},
            {"model": "spikingbrain-w8aspike", "context": context, "ttft_ms": w8, "peak_mem_gib": None},
        ]
    return {
        "device": "NVIDIA H100 80GB HBM3", "date": "2026-11-23",
        "config": {"num_layers": 28, "gla_layers": 14, "swa_layers": 14, "window": 4096, "hidden_size": 3584, "num_experts": 0},
        "matmul_tflops": 700.0, "rows": rows, "spike_sparsity": 0.6915,
    }


@pytest.fixture
def run_file(tmp_path):
    """:func:`fixture_run` written as ``ttft.json``."""
    path = tmp_path / "ttft.json"
    path.write_text(json.dumps(fixture_run()))
    return path
