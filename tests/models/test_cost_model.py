"""sb_layers.models.spikingbrain.cost_model: R = alpha (m/n) + (1 - alpha) a (k/M), its FLOP-count inputs,
and the comparison with a measured benchmarks/ttft.py run (its command line: tests/cli/test_estimate.py)."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cost_model_testing import fixture_run, run_file  # noqa: F401  (fixture)
from sb_layers.models.spikingbrain.cost_model import (
    ModelShape,
    active_from_sparsity,
    attended_fraction,
    attention_share,
    cost_ratio,
    estimate,
    expert_fraction,
    full_pairs,
    linear_attention_pairs,
    speedup,
    window_pairs,
)
from sb_layers.models.spikingbrain.cost_runs import compare_run, load_run, shape_from_run, sparsity_from_stats, validate_run

unit = st.floats(0.0, 1.0)
positive_unit = st.floats(1e-6, 1.0)


# --- the formula ---------------------------------------------------------------------------------


@given(alpha=unit)
def test_nothing_sparse_costs_exactly_the_baseline(alpha):
    assert cost_ratio(alpha, 1.0, 1.0, 1.0) == pytest.approx(1.0, abs=1e-15)
    assert speedup(alpha, 1.0) == pytest.approx(1.0, abs=1e-15)


@given(alpha=unit, attended=unit, active=unit, experts=positive_unit)
def test_ratio_is_a_convex_combination_and_never_slower_when_all_inputs_shrink(alpha, attended, active, experts):
    ratio = cost_ratio(alpha, attended, active, experts)
    linear = active * experts
    assert min(attended, linear) - 1e-12 <= ratio <= max(attended, linear) + 1e-12
    assert ratio <= 1.0 + 1e-12
    if ratio > 0:
        assert speedup(alpha, attended, active, experts) == pytest.approx(1.0 / ratio)
        assert speedup(alpha, attended, active, experts) >= 1.0 - 1e-12


def test_ratio_endpoints_and_zero_cost():
    assert cost_ratio(1.0, 0.25, 0.5, 0.5) == 0.25  # all attention: only m/n matters
    assert cost_ratio(0.0, 0.25, 0.5, 0.5) == 0.25  # no attention: only a k/M matters
    assert speedup(1.0, 0.0) == math.inf


@pytest.mark.parametrize(
    "args, words",
    [
        ((1.5, 0.5), ["alpha", "[0, 1]"]),
        ((-0.1, 0.5), ["alpha", "[0, 1]"]),
        ((0.5, -0.5), ["attended_fraction", ">= 0"]),
        ((0.5, math.nan), ["attended_fraction"]),
        ((0.5, 0.5, 1.2), ["active_fraction", "[0, 1]"]),
        ((0.5, 0.5, 1.0, 0.0), ["expert_fraction", "(0, 1]"]),
        ((True, 0.5), ["alpha", "got bool"]),
    ],
)
def test_cost_ratio_names_the_bad_input_and_its_range(args, words):
    # a value of the wrong type (a bool is not a number here) is a TypeError, one out of range a ValueError
    with pytest.raises(TypeError if isinstance(args[0], bool) else ValueError) as error:
        cost_ratio(*args)
    for word in words:
        assert word in str(error.value)


def test_sparsity_maps_to_the_active_fraction():
    assert active_from_sparsity(0.6915) == pytest.approx(0.3085)
    with pytest.raises(ValueError, match=r"sparsity must be a finite number in \[0, 1\]"):
        active_from_sparsity(1.5)


# --- the FLOP count ------------------------------------------------------------------------------


@given(context=st.integers(1, 300), window=st.integers(1, 300))
def test_window_pairs_count_every_allowed_query_key_pair(context, window):
    brute = sum(1 for i in range(context) for j in range(context) if 0 <= i - j < window)
    assert window_pairs(context, window) == brute
    assert window_pairs(context, window, "decode") == min(context, window)
    if window >= context:
        assert window_pairs(context, window) == full_pairs(context) == context * (context + 1) // 2


@given(context=st.integers(1, 4096), head_dim=st.integers(1, 256))
def test_linear_attention_is_the_cheaper_of_its_two_forms(context, head_dim):
    pairs = linear_attention_pairs(context, head_dim)
    assert pairs == min(context * head_dim, full_pairs(context))
    assert linear_attention_pairs(context, head_dim, "decode") == min(head_dim, context)


def test_attention_share_equals_a_hand_count():
    shape = ModelShape(
        num_layers=2, hidden_size=8, num_heads=2, num_kv_heads=1, head_dim=4, intermediate_size=16,
        gla_layers=1, swa_layers=1, window=3,
    )
    n = 10
    attention = 2 * (4 * 2 * 4) * (n * (n + 1) // 2)  # layers * 4 H d * pairs
    linear = n * 2 * (2 * 8 * 8 + 4 * 8 * 4 + 2 * 8 * 8 + 6 * 8 * 16)  # tokens * layers * (q, k+v, o, FFN)
    assert attention_share(shape, n) == pytest.approx(attention / (attention + linear))
    decode_linear = linear // n
    decode_attention = 2 * (4 * 2 * 4) * n
    assert attention_share(shape, n, "decode") == pytest.approx(decode_attention / (decode_attention + decode_linear))
    # m/n: one SWA layer (window 3) and one GLA layer (4 keys' worth per token) over 2 full layers
    expected = (window_pairs(n, 3) + min(n * 4, n * (n + 1) // 2)) / (2 * (n * (n + 1) // 2))
    assert attended_fraction(shape, n) == pytest.approx(expected)


def test_alpha_grows_and_the_attended_fraction_shrinks_with_context():
    shape = ModelShape()
    contexts = [1024, 4096, 32768, 131072, 524288, 1 << 20]
    alphas = [attention_share(shape, n) for n in contexts]
    attended = [attended_fraction(shape, n) for n in contexts]
    assert all(0 < a < 1 for a in alphas) and alphas == sorted(alphas)
    assert attended == sorted(attended, reverse=True)
    speedups = [estimate(shape, n).speedup for n in contexts]
    assert speedups == sorted(speedups) and speedups[-1] > 10


def test_full_or_wide_window_attention_attends_everything():
    full = ModelShape(gla_layers=0, swa_layers=0, full_layers=28)
    wide = ModelShape(gla_layers=0, swa_layers=28, window=1 << 20)
    for n in (1, 100, 4096, 1 << 20):
        assert attended_fraction(full, n) == 1.0
        assert attended_fraction(wide, n) == 1.0
        assert estimate(full, n).speedup == pytest.approx(1.0)


def test_expert_fraction_is_the_computed_share_of_the_linear_flops():
    assert expert_fraction(ModelShape()) == 1.0
    moe = ModelShape(num_experts=16, experts_per_token=1, shared_experts=1)
    projections = 2 * 3584 * 3584 + 4 * 3584 * 512 + 2 * 3584 * 3584
    ffn = 6 * 3584 * 18944
    assert expert_fraction(moe) == pytest.approx((projections + 2 * ffn) / (projections + 17 * ffn))
    # without the attention projections the fraction would be exactly (k + S) / (M + S)
    assert 2 / 17 < expert_fraction(moe) < 1
    kept_dense = ModelShape(num_experts=16, experts_per_token=1, shared_experts=1, moe_layers=21)
    assert expert_fraction(moe) < expert_fraction(kept_dense) < 1


def test_shape_of_spikingbrain_configs():
    from sb_layers.models.spikingbrain import SpikingBrainConfig

    assert ModelShape.from_config(SpikingBrainConfig()) == ModelShape()
    intra = SpikingBrainConfig(
        variant="intra_layer", full_attn_layers=[6, 13, 20, 27], num_experts=16, num_experts_per_tok=1,
        num_shared_experts=1, dense_ffn_layers=[0, 1, 2, 4, 6, 8, 10],
    )
    shape = ModelShape.from_config(intra)
    assert (shape.gla_layers, shape.swa_layers, shape.full_layers, shape.num_moe_layers) == (28, 24, 4, 21)
    # two attentions per layer: at short contexts the 76B style attends more than the baseline does
    assert attended_fraction(shape, 64) > 1 > attended_fraction(shape, 1 << 20)


@pytest.mark.parametrize("arch", ["qwen2", "llama", "mistral"])
def test_shape_of_a_transformer_config_is_its_converted_spikingbrain_models(arch):
    """A Qwen2 / Llama / Mistral config (the issue's 'Qwen2Config' object has no attribute 'variant'): the
    shape of the SpikingBrain model that the conversion builds from that Transformer."""
    import transformers

    from sb_adapters.tiny import tiny_model
    from sb_layers.models.spikingbrain import SpikingBrainForCausalLM

    config = {"qwen2": transformers.Qwen2Config, "llama": transformers.LlamaConfig, "mistral": transformers.MistralConfig}[arch](
        hidden_size=256, intermediate_size=704, num_hidden_layers=6, num_attention_heads=8, num_key_value_heads=2,
    )
    shape = ModelShape.from_config(config)
    assert (shape.num_layers, shape.hidden_size, shape.num_heads, shape.num_kv_heads, shape.head_dim, shape.intermediate_size) == (6, 256, 8, 2, 32, 704)
    assert (shape.gla_layers, shape.swa_layers, shape.full_layers, shape.window) == (3, 3, 0, 4096)  # SWA at the odd layers
    converted = SpikingBrainForCausalLM.from_qwen2(tiny_model("qwen2"))  # what the conversion builds
    assert ModelShape.from_config(tiny_model("qwen2").config) == ModelShape.from_config(converted.config)


def test_shape_of_another_config_is_a_value_error_naming_it():
    import transformers

    with pytest.raises(ValueError, match=r"qwen2, llama, mistral.*GPT2Config \(model_type 'gpt2'\)"):
        ModelShape.from_config(transformers.GPT2Config())


@pytest.mark.parametrize(
    "fields, words",
    [
        (dict(gla_layers=29), ["gla_layers", "num_layers=28"]),
        (dict(gla_layers=10), ["cover num_layers"]),
        (dict(swa_layers=20, full_layers=10), ["swa_layers + full_layers"]),
        (dict(window=0), ["window", ">= 1"]),
        (dict(num_experts=4, experts_per_token=5), ["experts_per_token (num_experts=4)", "[1, 4]"]),
        (dict(moe_layers=30, num_experts=4), ["moe_layers"]),
    ],
)
def test_model_shape_names_bad_fields(fields, words):
    with pytest.raises(ValueError) as error:
        ModelShape(**fields)
    for word in words:
        assert word in str(error.value)


def test_estimate_records_where_each_input_came_from():
    e = estimate(ModelShape(), 4096, alpha=0.5, active=0.25)
    assert e.sources == {"alpha": "given", "attended_fraction": "derived", "active_fraction": "given", "expert_fraction": "derived"}
    assert e.cost_ratio == pytest.approx(0.5 * attended_fraction(ModelShape(), 4096) + 0.5 * 0.25)
    with pytest.raises(ValueError, match="context"):
        estimate(ModelShape(), 0)
    with pytest.raises(ValueError, match="phase"):
        estimate(ModelShape(), 16, phase="train")
    with pytest.raises(TypeError, match="shape"):
        estimate({}, 16)


# --- a measured run ------------------------------------------------------------------------------


def test_run_comparison_puts_theory_beside_measurement(run_file):
    run = load_run(run_file)
    assert shape_from_run(run) == ModelShape()
    rows = {c.context: c for c in compare_run(run)}
    assert sorted(rows) == [4096, 32768, 131072, 524288]
    assert rows[4096].measured_bf16 == pytest.approx(1.12)
    assert rows[131072].measured_bf16 == pytest.approx(9372.0 / 2343.0)
    assert rows[131072].measured_w8aspike == pytest.approx(9372.0 / 1800.0)
    assert rows[32768].measured_w8aspike is None and rows[524288].measured_bf16 is None
    for context, row in rows.items():
        assert row.bf16.speedup == pytest.approx(estimate(ModelShape(), context).speedup)
        assert row.w8aspike.active_fraction == pytest.approx(1 - 0.6915)
        assert row.w8aspike.speedup > row.bf16.speedup  # sparse spikes only remove work
    overridden = compare_run(run, sparsity=0.0)
    assert all(c.w8aspike.speedup == pytest.approx(c.bf16.speedup) for c in overridden)
    without = dict(run, spike_sparsity=None)
    assert all(c.w8aspike is None for c in compare_run(without))


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda r: r.pop("device"), ["run", "device"]),
        (lambda r: r["config"].pop("window"), ["run['config']", "window"]),
        (lambda r: r["config"].update(window=0), ["run['config']['window']", ">= 1"]),
        (lambda r: r.update(matmul_tflops=-1.0), ["matmul_tflops", "> 0"]),
        (lambda r: r.update(rows=[]), ["rows", "non-empty"]),
        (lambda r: r["rows"][2].update(model="llama"), ["run['rows'][2]['model']", "qwen2"]),
        (lambda r: r["rows"][0].update(context=0), ["run['rows'][0]['context']", ">= 1"]),
        (lambda r: r["rows"][1].update(ttft_ms=-3.0), ["run['rows'][1]['ttft_ms']", "> 0"]),
        (lambda r: r.update(spike_sparsity=1.5), ["spike_sparsity", "[0, 1]"]),
    ],
)
def test_run_validation_names_the_field(change, words):
    run = fixture_run()
    change(run)
    with pytest.raises(ValueError) as error:
        validate_run(run)
    for word in words:
        assert word in str(error.value)


def test_run_file_errors(tmp_path):
    with pytest.raises(ValueError, match="existing file"):
        load_run(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_run(bad)


def test_spike_statistics_file_gives_the_sparsity(tmp_path):
    import torch

    from sb_layers import SpikingReport
    from sb_neurons import spike_stats

    stats = spike_stats(counts=torch.tensor([[0, 1, -3, 0, 7, 0]]), codec="bitwise_bidirectional")
    path = tmp_path / "report.json"
    path.write_text(json.dumps(SpikingReport(total=stats).as_dict()))
    assert sparsity_from_stats(path) == pytest.approx(3 / 6)  # three of six channels have a zero count
    path.write_text(json.dumps(stats.as_dict()))
    assert sparsity_from_stats(path) == pytest.approx(stats.silent_channel_fraction)
    path.write_text(json.dumps({"firing_rate": 0.1}))
    with pytest.raises(ValueError, match="silent_channel_fraction"):
        sparsity_from_stats(path)


def test_a_smaller_runs_head_layout_comes_from_its_config_or_flags():
    run = fixture_run()
    run["config"].update(num_layers=4, gla_layers=2, swa_layers=[1, 3], window=64, hidden_size=128)
    with pytest.raises(ValueError) as error:
        shape_from_run(run)
    assert "hidden_size=128" in str(error.value) and "--num-heads" in str(error.value) and "--intermediate-size" in str(error.value)
    tiny = dict(num_heads=4, num_kv_heads=2, head_dim=32, intermediate_size=256)
    from_flags = shape_from_run(run, **tiny)
    assert (from_flags.num_layers, from_flags.swa_layers, from_flags.full_layers, from_flags.head_dim) == (4, 2, 0, 32)
    named = dict(run, config={**run["config"], "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32, "intermediate_size": 256})
    assert shape_from_run(named) == from_flags
