"""Bad inputs at every public entry point of sb_neurons, sb_kernels and sb_layers, the model configs and
``from_pretrained`` of a corrupted checkpoint (issue 19).

Each public name in the packages' ``__all__`` has an :class:`Entry`: a valid tiny call, the tensor and
number arguments to spoil, and the documented exceptions. A coverage test fails when an exported name has
neither an entry nor a reviewed exemption (:data:`EXEMPT`). The spoilers are the inputs users get wrong:

- tensors: NaN, Inf, an integer, complex or float16 dtype, a second device (``meta`` on a CPU machine),
  a shape mismatch, empty (a zero-size dimension), non-contiguous and expanded (stride-0) views;
- numbers: a bool where a number is expected (``k=True``), zero, negative, NaN, Inf, a float count.

Expected: a ``ValueError`` / ``TypeError`` whose message names the argument; for non-contiguous and
expanded tensors (and where an entry documents it, empty ones) the same result as the contiguous input.
Kernel entry points run their Triton path on CPU tensors in the interpreter (tests/kernel_testing.py).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from kernel_testing import triton_interpreter  # noqa: F401  (autouse fixture: Triton's CPU interpreter)

import sb_kernels
import sb_layers
import sb_neurons

pytestmark = [
    pytest.mark.usefixtures("single_thread"),
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
]


def _g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def rand(*shape, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(shape, generator=_g(seed), dtype=torch.float64).to(dtype)


@dataclass
class Entry:
    """One public entry point: ``call(**make())`` is a valid call.

    tensors: argument names holding floating tensors to spoil; ``numbers``: name -> kind of number
    (``"positive"``: finite > 0; ``"count"``: int >= 1; ``"nonneg_int"``: int >= 0); ``allow``:
    (argument, spoiler) -> the documented outcome instead of an error: ``"same"`` (the contiguous result)
    or ``"returns"`` (a documented result, e.g. NaN propagated).
    """

    name: str
    call: Callable[..., Any]
    make: Callable[[], dict[str, Any]]
    tensors: tuple[str, ...] = ()
    numbers: dict[str, str] = field(default_factory=dict)
    allow: dict[tuple[str, str], str] = field(default_factory=dict)
    skip: tuple[str, ...] = ()  # spoilers that do not apply to this entry (why: see its comment)


# --- sb_neurons ----------------------------------------------------------------------------------------

N = sb_neurons
K = sb_kernels
L = sb_layers


# The step function and its surrogates run at every time step: documented as unchecked for finiteness
# (NaN gives no spike); the neurons that call them check their inputs.
ELEMENTWISE_STEP = {("x", "nan"): "returns", ("x", "inf"): "returns"}

ENTRIES: list[Entry] = [
    Entry("sb_neurons.spike_count", N.spike_count, lambda: dict(x=rand(3, 8), k=3.0), ("x",), {"k": "positive"}),
    Entry("sb_neurons.spike_quantize", N.spike_quantize, lambda: dict(x=rand(3, 8), k=3.0), ("x",), {"k": "positive"}),
    Entry("sb_neurons.adaptive_threshold", N.adaptive_threshold, lambda: dict(x=rand(3, 8), k=3.0), ("x",), {"k": "positive"}),
    Entry("sb_neurons.first_input_threshold", N.first_input_threshold, lambda: dict(x_seq=rand(4, 3, 8), k=3.0), ("x_seq",), {"k": "positive"}),
    Entry("sb_neurons.clamped_mask", N.clamped_mask, lambda: dict(x=rand(3, 8), k=3.0, clamp=(-2, 2)), ("x",), {"k": "positive"}),
    Entry("sb_neurons.AdaptiveThresholdSpike", lambda x, k: N.AdaptiveThresholdSpike(k=k)(x), lambda: dict(x=rand(3, 8), k=3.0), ("x",), {"k": "positive"}),
    Entry("sb_neurons.AdaptiveIFNode", lambda x_seq, k: N.AdaptiveIFNode(k=k, step_mode="m")(x_seq), lambda: dict(x_seq=rand(4, 2, 8), k=3.0), ("x_seq",), {"k": "positive"}),
    Entry("sb_neurons.AdaptiveLIFNode", lambda x_seq, decay: N.AdaptiveLIFNode(decay=decay, step_mode="m")(x_seq), lambda: dict(x_seq=rand(4, 2, 8), decay=0.5),
          ("x_seq",), {"decay": "positive"}),  # multi-step input: x_seq (SpikingJelly's name)
    Entry("sb_neurons.DeltaEncoder", lambda x, threshold: N.DeltaEncoder(threshold=threshold)(x), lambda: dict(x=rand(4, 2, 8), threshold=0.1), ("x",), {"threshold": "positive"}),
    Entry("sb_neurons.SigmaDeltaEncoder", lambda x, threshold: N.SigmaDeltaEncoder(threshold=threshold)(x), lambda: dict(x=rand(4, 2, 8), threshold=0.1), ("x",), {"threshold": "positive"}),
    Entry("sb_neurons.ATan", lambda x, alpha: N.ATan(alpha=alpha)(x), lambda: dict(x=rand(3, 8), alpha=2.0), ("x",), {"alpha": "positive"}, allow=ELEMENTWISE_STEP),
    Entry("sb_neurons.Sigmoid", lambda x, alpha: N.Sigmoid(alpha=alpha)(x), lambda: dict(x=rand(3, 8), alpha=4.0), ("x",), {"alpha": "positive"}, allow=ELEMENTWISE_STEP),
    Entry("sb_neurons.heaviside", N.heaviside, lambda: dict(x=rand(3, 8)), ("x",), allow=ELEMENTWISE_STEP),
    Entry("sb_neurons.multistep_neuron_forward", N.multistep_neuron_forward, lambda: dict(x_seq=rand(4, 2, 8), v_th=0.5), ("x_seq",), {"v_th": "positive"}),
    Entry("sb_neurons.spike_stats", N.spike_stats, lambda: dict(x=torch.randint(-1, 2, (4, 2, 8), generator=_g()).float(), T=4, codec="ternary"), ("x",),
          {"T": "count"}, allow={("x", "int"): "same"}),  # an integer train is a train
    Entry("sb_neurons.spike_train_matmul", N.spike_train_matmul,
          lambda: dict(train=torch.randint(-1, 2, (3, 2, 8), generator=_g()).float(), weight=rand(5, 8), codec="ternary"),
          ("train", "weight"), allow={("train", "int"): "same"}),  # an integer train (Codec.encode's int8) is a train
    Entry("sb_neurons.energy_estimate", N.energy_estimate, lambda: dict(stats=2.5, fp16_mac_pj=1.5, int8_mac_pj=0.23, add_pj=0.03), (),
          {"fp16_mac_pj": "positive", "int8_mac_pj": "positive", "add_pj": "positive"}),
]

# --- sb_kernels (Triton path under the interpreter) -------------------------------------------------------


def _w8(n=6, kdim=32, group=32):
    w = torch.randint(-127, 128, (n, kdim), generator=_g(), dtype=torch.int8)
    scales = torch.rand(n, kdim // group, 1, generator=_g()) / 100 + 1e-3
    return w, scales


def _decode(batch=2, heads=4, kv=2, length=5, dim=16):
    return dict(q=rand(batch, heads, 1, dim), keys=rand(batch, kv, length, dim, seed=1), values=rand(batch, kv, length, dim, seed=2),
                allowed=torch.ones(batch, 1, length, dtype=torch.bool))


def _ring(batch=2, heads=4, kv=2, window=4, dim=8):
    return dict(q=rand(batch, heads, dim), k=rand(batch, kv, dim, seed=1), v=rand(batch, kv, dim, seed=2),
                keys=torch.zeros(batch, kv, window, dim), values=torch.zeros(batch, kv, window, dim),
                key_mask=torch.zeros(batch, window, dtype=torch.bool), key_index=torch.arange(window) - window,
                seen_tokens=torch.zeros(batch, dtype=torch.long), inv_freq=1.0 / (100.0 ** (torch.arange(0, dim, 2) / dim)))


def _gla_decode(batch=2, heads=2, dk=8, dv=8):
    return dict(q=rand(batch, heads, dk), k=rand(batch, heads, dk, seed=1), v=rand(batch, heads, dv, seed=2),
                g=-rand(batch, heads, dk, seed=3).abs(), state=rand(batch, heads, dk, dv, seed=4), scale=dk ** -0.5)


def _merge():
    out = torch.empty(2, 2, 3, 8)
    return dict(out=out, a=(rand(2, 2, 3, 8), rand(2, 2, 3, seed=1)), b=(rand(2, 2, 3, 8, seed=2), rand(2, 2, 3, seed=3)))


def _merge_call(out, a, b, **kw):
    K.merge_attention_into(out, a, b, **kw)
    return out


def _ring_call(fn):
    """``fn`` on fresh copies of the ring buffers (each call starts from the same ring), returning what it
    writes in place too: a NaN in ``k`` or ``v`` lands in the slot written in ``keys`` / ``values``."""
    def call(keys, values, key_mask, key_index, **kw):
        buffers = dict(keys=keys.clone(), values=values.clone(), key_mask=key_mask.clone(), key_index=key_index.clone())
        return (*fn(**kw, **buffers), *buffers.values())
    call.__name__ = fn.__name__
    return call


def _triton(fn):
    def call(**kw):
        return fn(**kw, backend="triton")
    call.__name__ = "triton:" + fn.__name__
    return call


ENTRIES += [
    Entry("sb_kernels.rms_norm", _triton(K.rms_norm), lambda: dict(x=rand(3, 8), weight=rand(8, seed=1), eps=1e-6), ("x", "weight"), {"eps": "positive"}),
    Entry("sb_kernels.rms_norm_reference", K.rms_norm_reference, lambda: dict(x=rand(3, 8), weight=rand(8, seed=1), eps=1e-6), ("x", "weight"), {"eps": "positive"}),
    Entry("sb_kernels.add_rms_norm", _triton(K.add_rms_norm), lambda: dict(x=rand(3, 8), residual=rand(3, 8, seed=2), weight=rand(8, seed=1), eps=1e-6),
          ("x", "residual", "weight"), {"eps": "positive"}),
    Entry("sb_kernels.silu_mul", _triton(K.silu_mul), lambda: dict(gate=rand(3, 8), up=rand(3, 8, seed=1)), ("gate", "up")),
    Entry("sb_kernels.silu_mul_reference", K.silu_mul_reference, lambda: dict(gate=rand(3, 8), up=rand(3, 8, seed=1)), ("gate", "up")),
    Entry("sb_kernels.apply_rotary", _triton(K.apply_rotary), lambda: dict(x=rand(1, 2, 3, 8), cos=rand(1, 3, 8, seed=1), sin=rand(1, 3, 8, seed=2)), ("x", "cos", "sin"),
          allow={("x", "empty"): "raises:cos must have shape"}),  # B = 0 against cos's B = 1: a mismatch, named
    Entry("sb_kernels.apply_rotary_reference", K.apply_rotary_reference, lambda: dict(x=rand(1, 2, 3, 8), cos=rand(1, 3, 8, seed=1), sin=rand(1, 3, 8, seed=2)), ("x", "cos", "sin")),
    Entry("sb_kernels.decode_attention", _triton(K.decode_attention), _decode, ("q", "keys", "values")),
    Entry("sb_kernels.decode_attention_reference", K.decode_attention_reference, _decode, ("q", "keys", "values")),
    Entry("sb_kernels.merge_attention_into", _triton(_merge_call), _merge, ("out",),
          allow={("out", "noncontig"): "raises:out needs unit stride along D", ("out", "expanded"): "raises:out must not be an expanded",
                 ("out", "int"): "raises:out",
                 ("out", "complex"): "raises:out", ("out", "nan"): "returns", ("out", "inf"): "returns"}),  # out is written, not read
    Entry("sb_kernels.merge_attention_reference", lambda a, b: K.merge_attention_reference([a, b]), lambda: {k: v for k, v in _merge().items() if k != "out"}),
    Entry("sb_kernels.multistep_neuron", _triton(K.multistep_neuron), lambda: dict(x_seq=rand(4, 2, 8), v_th=0.5, decay=1.0), ("x_seq",),
          {"v_th": "positive", "decay": "positive"}),
    Entry("sb_kernels.spike_count_rows", _triton(K.spike_count_rows), lambda: dict(x=rand(3, 8), k=3.0), ("x",), {"k": "positive"}),
    Entry("sb_kernels.spike_count_rows_reference", K.spike_count_rows_reference, lambda: dict(x=rand(3, 8), k=3.0), ("x",), {"k": "positive"}),
    Entry("sb_kernels.spike_fake_quantize", _triton(K.spike_fake_quantize), lambda: dict(x=rand(3, 8), k=3.0), ("x",), {"k": "positive"}),
    Entry("sb_kernels.spike_fake_quantize_reference", K.spike_fake_quantize_reference, lambda: dict(x=rand(3, 8), k=3.0), ("x",), {"k": "positive"}),
    Entry("sb_kernels.int8_fake_quantize", _triton(K.int8_fake_quantize), lambda: dict(x=rand(3, 8)), ("x",)),
    Entry("sb_kernels.int8_fake_quantize_reference", K.int8_fake_quantize_reference, lambda: dict(x=rand(3, 8)), ("x",)),
    Entry("sb_kernels.w8aspike_linear", _triton(K.w8aspike_linear), lambda: dict(x=rand(3, 32), weight_int8=_w8()[0], scales=_w8()[1], k=3.0),
          ("x", "scales"), {"k": "positive"}),
    Entry("sb_kernels.w8aspike_linear_reference", K.w8aspike_linear_reference, lambda: dict(x=rand(3, 32), weight_int8=_w8()[0], scales=_w8()[1], k=3.0),
          ("x", "scales"), {"k": "positive"}),
    Entry("sb_kernels.w8aspike_linear_cpu", K.w8aspike_linear_cpu, lambda: dict(x=rand(3, 32), weight_int8=_w8()[0], scales=_w8()[1], k=3.0),
          ("x", "scales"), {"k": "positive"}),
    Entry("sb_kernels.dequantize_weight", K.dequantize_weight, lambda: dict(weight_int8=_w8()[0], scales=_w8()[1]), ("scales",)),
    Entry("sb_kernels.int8_matmul_int32", _triton(K.int8_matmul_int32),
          lambda: dict(counts=torch.randint(-5, 6, (3, 32), generator=_g(), dtype=torch.int8), weight_int8=_w8()[0])),
    Entry("sb_kernels.split_int8_digits", K.split_int8_digits, lambda: dict(counts=torch.randint(-500, 500, (3, 16), generator=_g(), dtype=torch.int32))),
    Entry("sb_kernels.split_weight_codes", K.split_weight_codes, lambda: dict(codes=torch.randint(-300, 300, (3, 16), generator=_g(), dtype=torch.int32))),
    Entry("sb_kernels.weight_codes", K.weight_codes, lambda: dict(weight_int8=_w8()[0], residual=None)),
    Entry("sb_kernels.code_statistics", K.code_statistics, lambda: dict(weight_int8=_w8()[0], residual=None)),
    Entry("sb_kernels.rotate_and_write_ring", _ring_call(_triton(K.rotate_and_write_ring)), _ring, ("q", "k", "v", "inv_freq")),
    Entry("sb_kernels.rotate_and_write_ring_reference", _ring_call(K.rotate_and_write_ring_reference), _ring, ("q", "k", "v", "inv_freq")),
    # An infinite gate logit is the gate's documented limit (decay 1 or 0, finite): test_gla_decode_infinite_gate.
    Entry("sb_kernels.gla_decode_step", _triton(K.gla_decode_step), _gla_decode, ("q", "k", "v", "g", "state"), {"scale": "positive"},
          allow={("v", "shape"): "raises:state must be", ("g", "inf"): "returns"}),
    Entry("sb_kernels.gla_decode_step_reference", K.gla_decode_step_reference, _gla_decode, ("q", "k", "v", "g", "state"), {"scale": "positive"},
          allow={("g", "inf"): "returns"}),
]

# --- sb_layers --------------------------------------------------------------------------------------------


def _gla_inputs(batch=2, heads=2, length=5, dk=4, dv=4):
    return dict(q=rand(batch, heads, length, dk), k=rand(batch, heads, length, dk, seed=1), v=rand(batch, heads, length, dv, seed=2),
                gk=-rand(batch, heads, length, dk, seed=3).abs(), scale=dk ** -0.5, initial_state=rand(batch, heads, dk, dv, seed=4))


def _module(factory, arg="x"):
    """A layer built by ``factory`` (seeded), called on ``arg`` (+ other forward kwargs)."""
    def call(**kw):
        torch.manual_seed(0)
        return factory()(**kw)
    return call


def _swa():
    return L.SlidingWindowAttention(16, 4, 2, window=3, rope_theta=100.0)


def _gla_layer():
    return L.GatedLinearAttention(16, 4, 2, chunk_size=2)


def _hybrid():
    return L.HybridBlock(16, _gla_layer(), L.GLUMLP(16, 24))


def _parallel():
    return L.ParallelMixer(_gla_layer(), _swa())


MASK_MISMATCH = {("hidden_states", "empty"): "raises:attention_mask must have shape"}  # B = 0 against the mask's B = 2


def _layer_inputs():
    return dict(hidden_states=rand(2, 5, 16), attention_mask=torch.ones(2, 5, dtype=torch.long))


ENTRIES += [
    Entry("sb_kernels.gla_chunked", K.gla_chunked, lambda: dict(**_gla_inputs(), chunk_size=2), ("q", "k", "v", "gk", "initial_state"),
          {"scale": "positive", "chunk_size": "count"}, allow={("v", "shape"): "raises:initial_state must have shape"}),
    Entry("sb_kernels.gla_recurrent", K.gla_recurrent, _gla_inputs, ("q", "k", "v", "gk", "initial_state"), {"scale": "positive"},
          allow={("v", "shape"): "raises:initial_state must have shape"}),
    Entry("sb_kernels.gla_event_driven", K.gla_event_driven,
          lambda: dict(q_counts=torch.randint(-3, 4, (2, 2, 5, 4), generator=_g()).float(), q_v_th=rand(2, 2, 5, 1).abs() + 0.1,
                       k_counts=torch.randint(-3, 4, (2, 2, 5, 4), generator=_g(1)).float(), k_v_th=rand(2, 2, 5, 1, seed=1).abs() + 0.1,
                       v=rand(2, 2, 5, 4, seed=2), gk=-rand(2, 2, 5, 4, seed=3).abs(), scale=0.5),
          ("q_v_th", "k_v_th", "v", "gk"), {"scale": "positive"}, allow={("v", "shape"): "returns"}),  # any Dv
    Entry("sb_layers.apply_rotary", L.apply_rotary, lambda: dict(x=rand(1, 2, 3, 8), cos=rand(1, 3, 8, seed=1), sin=rand(1, 3, 8, seed=2), backend="torch"),
          ("x", "cos", "sin"), allow={("x", "empty"): "raises:cos must have shape"}),
    Entry("sb_layers.rotary_cos_sin", L.rotary_cos_sin, lambda: dict(positions=torch.arange(5)[None], head_dim=8, theta=100.0, dtype=torch.float32), (),
          {"head_dim": "count", "theta": "positive"}),
    Entry("sb_layers.RMSNorm", lambda x, eps: L.RMSNorm(8, eps=eps, backend="torch")(x), lambda: dict(x=rand(3, 8), eps=1e-6), ("x",), {"eps": "positive"}),
    Entry("sb_layers.GLUMLP", lambda x, intermediate_size: _module(lambda: L.GLUMLP(16, intermediate_size))(x=x),
          lambda: dict(x=rand(2, 3, 16), intermediate_size=24), ("x",), {"intermediate_size": "count"}),
    Entry("sb_layers.MoE", lambda x, top_k: _module(lambda: L.MoE(16, 24, num_experts=3, top_k=top_k))(x=x),
          lambda: dict(x=rand(2, 3, 16), top_k=2), ("x",), {"top_k": "count"}),
    Entry("sb_layers.SpikingLinear", lambda x, k: _module(lambda: L.SpikingLinear(16, 6, coding=L.SpikeCoding(k=k)))(x=x),
          lambda: dict(x=rand(2, 3, 16), k=3.0), ("x",), {"k": "positive"}),
    Entry("sb_layers.GatedLinearAttention", _module(_gla_layer), _layer_inputs, ("hidden_states",), allow=MASK_MISMATCH),
    Entry("sb_layers.SlidingWindowAttention", _module(_swa), _layer_inputs, ("hidden_states",), allow=MASK_MISMATCH),
    Entry("sb_layers.HybridBlock", _module(_hybrid), _layer_inputs, ("hidden_states",), allow=MASK_MISMATCH),
    Entry("sb_layers.ParallelMixer", _module(_parallel), _layer_inputs, ("hidden_states",), allow=MASK_MISMATCH),
    Entry("sb_layers.SinkTokens", lambda num_sinks, hidden_size: L.SinkTokens(num_sinks, hidden_size).weight.shape,
          lambda: dict(num_sinks=2, hidden_size=8), (), {"num_sinks": "count", "hidden_size": "count"}),
    Entry("sb_layers.WeightQuantizer", lambda out_features, in_features, bits: L.WeightQuantizer(out_features, in_features, bits=bits, group_size=8).scales.shape,
          lambda: dict(out_features=4, in_features=16, bits=8), (), {"out_features": "count", "in_features": "count"}),
    Entry("sb_layers.SpikeCoding", lambda k, group_size: L.SpikeCoding(k=k, group_size=group_size), lambda: dict(k=3.0, group_size=8), (),
          {"k": "positive", "group_size": "count"}),
    Entry("sb_layers.make_linear", lambda in_features, out_features: L.make_linear(in_features, out_features, True, None).weight.shape,
          lambda: dict(in_features=4, out_features=3), (), {"in_features": "count", "out_features": "count"}),
    Entry("sb_layers.upcycle", lambda num_experts, top_k: L.upcycle(L.GLUMLP(8, 12), num_experts, top_k=top_k).num_experts,
          lambda: dict(num_experts=3, top_k=1), (), {"num_experts": "count", "top_k": "count"}),
    Entry("sb_layers.RollingKVCache", lambda window: L.RollingKVCache(window).window, lambda: dict(window=4), (), {"window": "count"}),
    Entry("sb_layers.MixerCache", lambda num_layers: len(L.MixerCache(num_layers)), lambda: dict(num_layers=2), (), {"num_layers": "count"}),
    # A state is held, not computed: no finiteness check (a host read per layer and step, impossible inside a
    # captured CUDA graph); the layer's recurrence propagates a NaN visibly.
    Entry("sb_layers.GLAState", lambda recurrent: L.GLAState(recurrent).recurrent, lambda: dict(recurrent=rand(2, 2, 3, 3)), ("recurrent",),
          allow={("recurrent", "nan"): "returns", ("recurrent", "inf"): "returns"}),
]

# Names without an Entry, reviewed: why no bad-input case applies (or where their cases live).
EXEMPT = {
    "sb_neurons.CODEC_NAMES": "constant tuple",
    "sb_neurons.V_TH_MAX": "constant",
    "sb_neurons.V_TH_MIN": "constant",
    "sb_neurons.pending_threshold": "takes a dtype (torch.finfo raises TypeError for a non-float one); no tensor argument",
    "sb_neurons.Codec": "frozen dataclass describing a codec; built by get_codec (cases in SPECIAL)",
    "sb_neurons.EnergyEstimate": "result dataclass of energy_estimate",
    "sb_neurons.SpikeStats": "result dataclass of spike_stats",
    "sb_neurons.SpikeCount": "result named tuple of spike_count",
    "sb_neurons.SurrogateSpike": "abstract base of ATan/Sigmoid (its alpha check is theirs)",
    "sb_neurons.get_surrogate": "cases in SPECIAL",
    "sb_neurons.get_codec": "cases in SPECIAL",
    "sb_neurons.resolve_clamp": "cases in SPECIAL",
    "sb_layers.LayerReport": "result dataclass of the spike report",
    "sb_layers.ParallelState": "pair of cache entries, no tensor or number argument (its type checks: tests/layers/test_cache_entries.py)",
    "sb_layers.WeightCodeStats": "result dataclass of weight_code_stats",
    "sb_layers.SpikeRecorder": "takes a model (ValueError without spiking layers, TypeError for per_call: tests/layers/test_recorder.py); no tensor argument",
    "sb_layers.reset_spike_stats": "takes a model (TypeError naming model, as spiking_layers); no tensor argument",
    "sb_layers.weight_code_stats": "takes a model (TypeError naming model, as spiking_layers); no tensor argument",
    "sb_layers.format_weight_code_stats": "formats a mapping of WeightCodeStats (tests/models/test_model_release.py); no tensor argument",
    "sb_layers.SpikingReport": "result dataclass (total must be a SpikeStats: TypeError); built by from_layers / record_spikes",
    "sb_layers.SpikeRecording": "result named tuple of record_spikes",
    "sb_layers.spike_report": "takes a model (TypeError naming model, as spiking_layers); no tensor argument",
    "sb_layers.record_spikes": "takes a model and batches (empty batches: tests/test_bad_inputs.py; no spiking layers: tests/adapters/test_injector.py)",
    "sb_layers.spiking_layers": "takes a model (TypeError naming model, tests/adapters/test_injector.py); no tensor argument",
    "sb_kernels.BACKENDS": "constant tuple",
    "sb_kernels.Backend": "type alias",
    "sb_kernels.NeuronOutput": "result named tuple of multistep_neuron",
    "sb_kernels.QuantizedSpikes": "result named tuple of spike_count_rows",
    "sb_kernels.ResidualCodes": "integer CSR dataclass checked at construction (tests/kernels/test_kernels_w8aspike.py::test_residual_codes_reject_bad_inputs)",
    "sb_kernels.QuantizedSpikesWithStats": "result named tuple of spike_count_rows(return_stats=True)",
    "sb_kernels.fla_available": "no arguments",
    "sb_kernels.int_mm_available": "no arguments",
    "sb_layers.Int8SpikingLinear": "built from a SpikingLinear (bad inputs: tests/layers/test_int8_spiking_linear.py); its forward is SpikingLinear's",
    "sb_kernels.interpreter_enabled": "no arguments",
    "sb_kernels.use_reference": "context manager without arguments",
    "sb_kernels.resolve_backend": "cases in SPECIAL",
    "sb_kernels.gla_fla": "needs the fla library and CUDA (cases in SPECIAL: checks before the import)",
    "sb_layers.resolve_linear_backend": "cases in SPECIAL",
}

# --- the spoilers ---------------------------------------------------------------------------------------


def _poke(x: torch.Tensor, value: float) -> torch.Tensor:
    x = x.clone()
    x.view(-1)[0] = value
    return x


def _noncontig(x: torch.Tensor) -> torch.Tensor:
    """The same values through a non-contiguous view (a transposed copy transposed back)."""
    if x.ndim < 2:
        return torch.stack([x, x], dim=-1)[..., 0]
    return x.transpose(-1, -2).contiguous().transpose(-1, -2)


def _expanded(x: torch.Tensor) -> torch.Tensor:
    """Row 0 repeated along the first dimension through a stride-0 view."""
    return x[:1].expand(x.shape)


def _empty(x: torch.Tensor) -> torch.Tensor:
    return x[:0]


def _shrunk(x: torch.Tensor) -> torch.Tensor:
    return x[..., :-1] if x.shape[-1] > 1 else torch.cat([x, x], dim=-1)


TENSOR_SPOILERS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], str]] = {
    # name: (spoil, default expectation: "error" or "same" (equal to the result on the contiguous copy))
    "nan": (lambda x: _poke(x, math.nan), "error"),
    "inf": (lambda x: _poke(x, math.inf), "error"),
    "int": (lambda x: x.round().to(torch.int32), "error"),
    "complex": (lambda x: x.to(torch.complex64), "error"),
    "meta": (lambda x: x.to("meta"), "error"),
    "shape": (_shrunk, "error"),
    "empty": (_empty, "empty"),  # an error naming the argument, or a result (no crash inside torch)
    "noncontig": (_noncontig, "same"),
    "expanded": (_expanded, "same"),
}
NUMBER_SPOILERS = {
    "positive": {"bool": True, "zero": 0.0, "negative": -1.0, "nan": math.nan, "inf": math.inf, "str": "1"},
    "count": {"bool": True, "zero": 0, "negative": -2, "float": 2.5, "str": "1"},
}


# Float math that documents IEEE propagation (no host-side finiteness check in a hot path): a NaN or Inf
# input must show in the output, never vanish into a finite value.
PROPAGATES_NON_FINITE = {
    "sb_kernels.rms_norm", "sb_kernels.rms_norm_reference", "sb_kernels.add_rms_norm", "sb_kernels.silu_mul",
    "sb_kernels.silu_mul_reference", "sb_kernels.apply_rotary", "sb_kernels.apply_rotary_reference",
    "sb_kernels.decode_attention", "sb_kernels.decode_attention_reference", "sb_kernels.merge_attention_into",
    "sb_kernels.gla_decode_step", "sb_kernels.gla_decode_step_reference", "sb_kernels.rotate_and_write_ring",
    "sb_kernels.rotate_and_write_ring_reference", "sb_kernels.int8_fake_quantize", "sb_kernels.int8_fake_quantize_reference",
    "sb_kernels.spike_fake_quantize", "sb_kernels.spike_fake_quantize_reference", "sb_kernels.w8aspike_linear", "sb_kernels.w8aspike_linear_cpu",
    "sb_layers.apply_rotary", "sb_kernels.gla_chunked", "sb_kernels.gla_recurrent", "sb_layers.RMSNorm", "sb_layers.GLUMLP",
    "sb_layers.GatedLinearAttention", "sb_layers.SlidingWindowAttention", "sb_layers.HybridBlock", "sb_layers.ParallelMixer",
    "sb_layers.MoE", "sb_kernels.gla_event_driven",
}
# The dispatch's own clear error for a device mix on an explicit backend='triton' (names the rule, not an argument).
TRITON_DEVICE_ERROR = "needs all tensors on one CUDA device"


def _param(entry, arg, spoiler, expect):
    return pytest.param(entry, arg, spoiler, expect, id=f"{entry.name}-{arg}-{spoiler}")


def _cases():
    for entry in ENTRIES:
        for arg in entry.tensors:
            for spoiler, (_, default) in TENSOR_SPOILERS.items():
                if spoiler in entry.skip or (spoiler in ("meta", "shape") and len(entry.tensors) < 2):
                    continue  # one tensor argument: no device mix, no shape mismatch
                if spoiler in ("nan", "inf") and entry.name in PROPAGATES_NON_FINITE:
                    default = "propagates"
                if spoiler == "meta" and entry.call.__name__.startswith("triton:"):
                    default = "raises:" + TRITON_DEVICE_ERROR
                yield _param(entry, arg, spoiler, entry.allow.get((arg, spoiler), default))
        for arg, kind in entry.numbers.items():
            for spoiler in NUMBER_SPOILERS[kind]:
                yield _param(entry, arg, spoiler, entry.allow.get((arg, spoiler), "error"))


def _as_tensors(result: Any) -> list[torch.Tensor]:
    if isinstance(result, torch.Tensor):
        return [result]
    if dataclasses.is_dataclass(result) and not isinstance(result, type):  # e.g. SpikeStats: its fields
        return [t for f in dataclasses.fields(result) for t in _as_tensors(getattr(result, f.name))]
    if isinstance(result, (int, float)) and not isinstance(result, bool):
        return [torch.tensor(result)]
    if isinstance(result, (tuple, list)):
        return [t for item in result for t in _as_tensors(item)]
    return []


def _assert_same(result: Any, expected: Any) -> None:
    got, want = _as_tensors(result), _as_tensors(expected)
    assert len(got) == len(want) and got, "the spoiled call returned a different structure"
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        assert torch.equal(g.nan_to_num(), w.nan_to_num()), "non-contiguous / expanded input changed the result"


def _names_argument(arg: str) -> str:
    return rf"(?<![A-Za-z0-9_]){re.escape(arg)}(?![A-Za-z0-9_])"


@pytest.mark.parametrize("entry, arg, spoiler, expect", list(_cases()))
def test_bad_input_is_rejected_naming_the_argument(entry, arg, spoiler, expect):
    kwargs = entry.make()
    if arg in entry.numbers:
        kwargs[arg] = NUMBER_SPOILERS[entry.numbers[arg]][spoiler]
    else:
        kwargs[arg] = TENSOR_SPOILERS[spoiler][0](kwargs[arg])
    if expect == "error":
        with pytest.raises((ValueError, TypeError), match=_names_argument(arg)):
            entry.call(**kwargs)
    elif expect == "same":
        contiguous = {k: (v.contiguous() if k == arg else v) for k, v in kwargs.items()}
        _assert_same(entry.call(**kwargs), entry.call(**contiguous))
    elif expect == "empty":
        try:
            entry.call(**kwargs)
        except (ValueError, TypeError) as error:
            assert re.search(_names_argument(arg), str(error)), f"error does not name {arg}: {error}"
    elif expect == "propagates":
        assert any(not bool(torch.isfinite(t).all()) for t in _as_tensors(entry.call(**kwargs))), "a NaN/Inf input vanished"
    elif expect.startswith("raises:"):
        with pytest.raises((ValueError, TypeError, RuntimeError), match=expect.removeprefix("raises:")):
            entry.call(**kwargs)
    else:
        assert expect == "returns"
        entry.call(**kwargs)


@pytest.mark.parametrize("limit, decay", [(math.inf, 1.0), (-math.inf, 0.0)])
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_gla_decode_infinite_gate(limit, decay, backend):
    """Documented (sb_kernels.gla.decode): an infinite gate logit is the gate's limit, logsigmoid(+inf) = 0
    keeps the state row whole and logsigmoid(-inf) = -inf forgets it; the output stays finite, both paths."""
    args = _gla_decode()
    args["g"] = _poke(args["g"], limit)  # g[0, 0, 0]: key/value head 0, key dimension 0 of row 0
    out, new_state = K.gla_decode_step(**args, backend=backend)
    assert bool(torch.isfinite(out).all()) and bool(torch.isfinite(new_state).all())
    heads = args["q"].shape[1] // args["k"].shape[1]
    kv = args["k"][0, 0, 0].clamp_min(0) * args["v"][0, 0]  # relu(k) v of that row
    for h in range(heads):
        torch.testing.assert_close(new_state[0, h, 0], decay * args["state"][0, h, 0] + kv)
    ref_out, ref_state = K.gla_decode_step_reference(**args)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(new_state, ref_state)


def test_valid_calls_run():
    for entry in ENTRIES:
        entry.call(**entry.make())


def test_every_exported_name_has_a_case_or_a_reviewed_exemption():
    exported = {f"{module.__name__}.{name}" for module in (sb_neurons, sb_kernels, sb_layers) for name in module.__all__}
    covered = {entry.name for entry in ENTRIES} | set(EXEMPT)
    assert exported - covered == set(), "exported names without a bad-input case: add an Entry or a reviewed EXEMPT line"
    assert covered - exported == set(), "cases for names no longer exported"


# --- names whose inputs are not tensors: one table of (callable, expected error, match) -------------------

SPECIAL = [
    (lambda: sb_neurons.get_codec("morse"), ValueError, "morse"),
    (lambda: sb_neurons.get_codec(3), (TypeError, ValueError), "3"),
    (lambda: sb_neurons.get_surrogate("relu"), ValueError, "surrogate"),
    (lambda: sb_neurons.get_surrogate("atan", alpha=True), TypeError, "alpha"),
    (lambda: sb_neurons.resolve_clamp(True), TypeError, "clamp"),
    (lambda: sb_neurons.resolve_clamp((1, 2)), ValueError, "clamp"),
    (lambda: sb_neurons.resolve_clamp(1), ValueError, "clamp"),
    (lambda: sb_kernels.resolve_backend("cuda", rand(2), op="rms_norm"), ValueError, "backend"),
    (lambda: sb_layers.resolve_linear_backend(L.SpikeCoding(backend="torch"), "x", None), (TypeError, ValueError), "x|layer"),
    (lambda: sb_kernels.gla_fla(*[rand(1, 1, 2, 4)] * 4, scale=-1.0), (ValueError, RuntimeError, ImportError), "scale|fla"),
]


@pytest.mark.parametrize("call, error, match", SPECIAL, ids=[f"special-{i}" for i in range(len(SPECIAL))])  # noqa: E501
def test_special_entry_points_reject_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()


# --- the model configs: bad field values ------------------------------------------------------------------

from sb_layers.models.spikingbrain import GLASwaConfig, SpikingBrainConfig, SpikingBrainForCausalLM  # noqa: E402

TINY = dict(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
            intermediate_size=24, sliding_window=4, bos_token_id=1, eos_token_id=2)
BAD_FIELDS = [
    ("hidden_size", True), ("hidden_size", 16.0), ("hidden_size", 0), ("num_hidden_layers", -1), ("vocab_size", "50"),
    ("norm_eps", math.nan), ("norm_eps", "1e-6"), ("norm_eps", 0.0), ("norm_eps", True), ("rope_theta", math.inf),
    ("rope_theta", -1.0), ("gate_logit_normalizer", math.nan), ("sliding_window", True), ("sliding_window", 0),
    ("gla_chunk_size", 2.5), ("attn_layers", [5]), ("attn_layers", [1, 1]), ("attn_layers", "1"), ("num_key_value_heads", 3),
    ("head_dim", 0), ("variant", "diagonal"), ("gla_gate", "full"), ("feature_map", "gelu"), ("attn_mode", "magic"),
    ("hidden_act", "gelu"), ("prefill_chunk_size", 0), ("swa_query_chunk_size", -1), ("router_aux_loss_coef", -0.1),
    ("router_aux_loss_coef", True),
]


@pytest.mark.parametrize("config_class", [SpikingBrainConfig, GLASwaConfig])
@pytest.mark.parametrize("name, value", BAD_FIELDS, ids=[f"{n}={v!r}" for n, v in BAD_FIELDS])
def test_config_rejects_a_bad_field_naming_it(config_class, name, value):
    with pytest.raises((ValueError, TypeError), match=name):
        config_class(**{**TINY, name: value})


@pytest.mark.parametrize("name, value", [("k", math.nan), ("k", True), ("k", 0.0), ("k", math.inf), ("group_size", 0)])
def test_config_spiking_fields_are_named(name, value):
    with pytest.raises((ValueError, TypeError), match=rf"coding\.{name}"):
        SpikingBrainConfig(**TINY, spiking=True, coding={name: value})


# --- from_pretrained of a corrupted or mismatched checkpoint ----------------------------------------------


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    SpikingBrainForCausalLM(SpikingBrainConfig(**TINY)).save_pretrained(directory)
    return directory


def _copy(saved, tmp_path):
    import shutil

    shutil.copytree(saved, tmp_path / "ckpt")
    return tmp_path / "ckpt"


def _truncate(d):
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])


def _rewrite(d, change):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(d / "model.safetensors"))
    change(tensors)
    save_file(tensors, str(d / "model.safetensors"), metadata={"format": "pt"})


def _garble(d):
    (d / "config.json").write_text("{ not json")


def _no_config(d):
    (d / "config.json").unlink()


def _wrong_shape(d):
    _rewrite(d, lambda t: t.__setitem__("lm_head.weight", torch.zeros(51, 16)))


def _missing(d):
    _rewrite(d, lambda t: t.pop("model.norm.weight"))


def _mismatched_config(d):
    config = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**config, "hidden_size": 32, "head_dim": 16}))


CORRUPTIONS = [
    (_truncate, Exception, r"safetensors|header|deserializ|incomplete|invalid|Error"),
    (_garble, (OSError, ValueError), r"config\.json|JSON|json"),
    (_no_config, (OSError, ValueError), r"config\.json"),
    # from_pretrained compares the safetensors headers with the model's shapes before transformers loads.
    (_wrong_shape, ValueError, r"lm_head\.weight: shape \(51, 16\) in the checkpoint, \(50, 16\) expected"),
    (_mismatched_config, ValueError, r"size mismatch .*model\.embeddings\.weight: shape \(50, 16\) in the checkpoint, \(50, 32\) expected"),
]


@pytest.mark.parametrize("corrupt, error, match", CORRUPTIONS, ids=["truncated", "garbled_config", "no_config", "wrong_shape", "mismatched_config"])
def test_from_pretrained_rejects_a_corrupted_checkpoint(saved, tmp_path, corrupt, error, match):
    directory = _copy(saved, tmp_path)
    corrupt(directory)
    with pytest.raises(error, match=match):
        SpikingBrainForCausalLM.from_pretrained(directory)


def test_from_pretrained_reports_a_missing_weight(saved, tmp_path):
    """transformers initializes a missing weight and reports it in loading_info (its documented behaviour)."""
    directory = _copy(saved, tmp_path)
    _missing(directory)
    _, info = SpikingBrainForCausalLM.from_pretrained(directory, output_loading_info=True)
    assert "model.norm.weight" in info["missing_keys"]


# --- record_spikes of empty batches (issue "What new users tripped over", 10) -----------------------------


@pytest.mark.parametrize("inputs", [[], (), {}, torch.empty(0, dtype=torch.long)], ids=["list", "tuple", "dict", "tensor"])
def test_record_spikes_of_an_empty_batch_is_our_value_error(inputs):
    """An empty batch ran the model with no arguments and surfaced transformers' message ('You must
    specify exactly one of input_ids or inputs_embeds'); the error is ours and says what to pass."""
    from sb_adapters import SpikingConfig, inject_spiking, record_spikes
    from sb_adapters.tiny import tiny_model

    model = inject_spiking(tiny_model("llama"), SpikingConfig())
    with pytest.raises(ValueError, match=r"^batches\[0\] is an empty \w+: a batch is a tensor") as error:
        record_spikes(model, [inputs])
    assert "input_ids" not in str(error.value)
    with pytest.raises(ValueError, match=r"^batches must hold at least one batch"):
        record_spikes(model, [])
    assert "input_ids" not in str(error.value)
