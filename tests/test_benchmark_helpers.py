"""Helpers of the GPU benchmarks that change what a baseline computes: each must be an identity."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import _longctx as lc  # noqa: E402


def test_chunked_qwen_mlp_is_the_same_function():
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = lc.build_qwen(lc.qwen_config(tiny=True), torch.device("cpu"), torch.float64)
    ids = torch.randint(0, model.config.vocab_size, (2, 37))
    with torch.no_grad():
        whole = model(ids, use_cache=False).logits
        lc.chunk_qwen_mlp(model, 8)  # 37 tokens: four pieces of 8 and one of 5
        rows = []
        hook = model.model.layers[0].mlp.down_proj.register_forward_hook(lambda m, args, out: rows.append(args[0].shape[1]))
        chunked = model(ids, use_cache=False).logits
        hook.remove()
    assert rows == [8, 8, 8, 8, 5]
    torch.testing.assert_close(chunked, whole, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="tokens must be a positive int"):
        lc.chunk_qwen_mlp(model, 0)


def test_per_layer_guard_finds_a_wrong_spiking_linear():
    # The W8ASpike guard compares every spiking linear's fast output with its PyTorch count form on the
    # same input. On the CPU the fast path is the integer one (sb_kernels.w8aspike_linear_cpu: exact integer
    # sums, float32 scaling), so the two agree to float32 rounding; a layer whose output is corrupted must be named.
    from sb_layers.models.spikingbrain import to_w8aspike

    torch.manual_seed(0)
    config = lc.spikingbrain_config(True, 64, 32)
    model = to_w8aspike(lc.build_spikingbrain(config, torch.device("cpu"), torch.float32))
    clean = lc.per_layer_guard(model, 80, 1e-3)
    assert clean["passed"] and clean["rel_l2_error"] <= 1e-5 and clean["layers_checked"] > 4
    name = "model.layers.1.mlp.up_proj"
    target = dict(model.named_modules())[name]
    # A fault of the fast backend alone (the guard's reference call runs the same module on "torch").
    # Registered before the guard's own hook, so the guard sees the corrupted output.
    hook = target.register_forward_hook(lambda module, args, out: out if module.coding.backend == "torch" else out * 1.01)
    try:
        broken = lc.per_layer_guard(model, 80, 1e-3)
    finally:
        hook.remove()
    assert not broken["passed"] and broken["worst_layer"] == name
    assert abs(broken["rel_l2_error"] - 0.01) < 1e-4
    with pytest.raises(ValueError, match="nothing to judge"):
        lc.judge_layers({}, 1e-3)


def test_sweep_rows_name_each_configuration_and_record_failures():
    from _common import sweep_rows

    configs = [dict(BN=16, warps=2), dict(BN=32, warps=4), dict(BN=64, warps=8)]

    def measure(config):
        if config["BN"] == 64:
            raise RuntimeError("out of resources: shared memory")
        return {"ms": config["BN"] / 16}

    rows = sweep_rows(configs, ("BN", "warps"), configs[1], {"layer": "q/o"}, measure)
    assert [r["config"] for r in rows] == ["16/2", "32/4", "64/8"]
    assert [r["shipped"] for r in rows] == [False, True, False]
    assert [r.get("ms") for r in rows] == [1.0, 2.0, None]
    assert "shared memory" in rows[2]["error"] and all(r["layer"] == "q/o" for r in rows)
