"""Shared parts of the long-context benchmarks (``ttft.py``, ``decode.py``).

- the two models at full size with random bf16 weights, built directly on the GPU (never on the CPU):
  SpikingBrain-7B (the released config; fast path: fla GLA, query-blocked SWA, prefill in pieces) and a
  Qwen2.5-7B-shaped ``transformers.Qwen2ForCausalLM`` (SDPA attention);
- ``--tiny`` configurations of the same shapes' kinds, for CPU smoke runs;
- switching SpikingBrain between its fast path and its PyTorch reference path (the correctness guard);
- honest FLOP counts of a prefill, and the bf16 matmul rate and copy bandwidth of the device.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import gc
import json
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from sb_kernels import fla_available, use_reference
from sb_layers import SpikingLinear
from sb_layers.linear_attention import GatedLinearAttention
from sb_layers.models.spikingbrain import SpikingBrainConfig, SpikingBrainForCausalLM
from sb_layers.sliding_window import SlidingWindowAttention

GIB = 2**30
FLA_CHUNK = 64  # fla chunk_gla's chunk length, for the GLA FLOP count


# --- configurations ---------------------------------------------------------------------------------


def spikingbrain_config(tiny: bool, prefill_chunk_size: int, swa_query_chunk_size: int) -> SpikingBrainConfig:
    """The released SpikingBrain-7B config (or a tiny one), with the fast-path options set."""
    fields = dict(attn_mode="auto", prefill_chunk_size=prefill_chunk_size, swa_query_chunk_size=swa_query_chunk_size)
    if tiny:
        fields.update(
            vocab_size=512, hidden_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=256, sliding_window=64,
        )
    return SpikingBrainConfig(**fields)


def qwen_config(tiny: bool):
    """Qwen2.5-7B dimensions (28 layers, hidden 3584, 28/4 heads, MLP 18944), SDPA attention."""
    from transformers import Qwen2Config

    fields = dict(
        vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
        num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=4 * 2**20, rope_theta=1e6,
        rms_norm_eps=1e-6, tie_word_embeddings=False, use_sliding_window=False,
    )
    if tiny:
        fields.update(
            vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2,
        )
    config = Qwen2Config(**fields)
    config._attn_implementation = "sdpa"
    return config


def build_spikingbrain(config: SpikingBrainConfig, device: torch.device, dtype: torch.dtype) -> SpikingBrainForCausalLM:
    """Random-weight model allocated and initialized on ``device`` directly."""
    return SpikingBrainForCausalLM.build(config, device=device, dtype=dtype).eval()


def build_qwen(config, device: torch.device, dtype: torch.dtype):
    from transformers import Qwen2ForCausalLM

    with torch.device(device):
        model = Qwen2ForCausalLM._from_config(config, dtype=dtype, attn_implementation="sdpa")
    return model.eval()


def chunk_qwen_mlp(model, tokens: int) -> None:
    """Run each Qwen2 MLP over at most ``tokens`` positions at a time (the MLP acts per token).

    Its activations (three ``L x 18944`` tensors) then stay bounded: unchunked, a 512k-token prefill
    needs ~60 GB for them alone. Outputs equal the unchunked model's up to the GEMMs' choice of kernel
    for another row count. Attention is left as transformers runs it (SDPA, one causal call per layer).
    """
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
        raise ValueError(f"tokens must be a positive int, got {tokens!r}")
    for layer in model.model.layers:
        whole = layer.mlp.forward

        def forward(x: torch.Tensor, whole=whole) -> torch.Tensor:
            if x.shape[1] <= tokens:
                return whole(x)
            return torch.cat([whole(piece) for piece in x.split(tokens, dim=1)], dim=1)

        layer.mlp.forward = forward


def release(*objects) -> None:
    """Drop references held by the caller's containers and give the memory back to the device."""
    del objects
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --- fast path vs reference path ------------------------------------------------------------------------


def set_path(model: SpikingBrainForCausalLM, fast: bool, parts: str = "all") -> None:
    """Fast path: fla GLA ("auto" on CUDA), query-blocked SWA, Triton W8ASpike GEMMs, prefill in pieces.

    Reference path: PyTorch chunked GLA, SWA over all queries at once, PyTorch spiking linears, one piece;
    run it inside :func:`sb_kernels.use_reference` so the layers' other kernels take PyTorch too.
    Both compute the same function (the model's tests prove each switch an identity on CPU).
    ``parts="spiking"`` switches only the spiking linears (the rest stays on the reference path).
    """
    config = model.config
    for module in model.modules():
        if parts == "spiking" and not isinstance(module, SpikingLinear):
            continue
        if isinstance(module, GatedLinearAttention):
            module.mode = "auto" if fast else "chunk"
        elif isinstance(module, SlidingWindowAttention):
            module.query_chunk_size = config.swa_query_chunk_size if fast else None
        elif isinstance(module, SpikingLinear):
            module.coding = dataclasses.replace(module.coding, backend="auto" if fast else "torch")


@torch.no_grad()
def guard(
    model: SpikingBrainForCausalLM, length: int, keep: int, tolerance: float | None, piece: int, seed: int = 0, parts: str = "all",
) -> dict:
    """Logits of the last ``keep`` positions of a ``length``-token input: fast path vs reference path.

    The fast path runs in pieces of ``piece`` tokens (so that pieces, query blocks and the window all
    cross each other's boundaries); the reference in one piece.

    Returns the relative L2 error, the argmax agreement and whether the error is within ``tolerance``
    (``passed`` None when ``tolerance`` is None: a figure recorded for information).
    """
    device = model.lm_head.weight.device
    gen = torch.Generator(device="cpu").manual_seed(seed)
    ids = torch.randint(0, model.config.vocab_size, (1, length), generator=gen).to(device)
    set_path(model, fast=False)
    with use_reference():  # norms, rotary, GLU and the SWA merge on PyTorch too
        reference = model(ids, use_cache=False, logits_to_keep=keep, prefill_chunk_size=length).logits.float()
    set_path(model, fast=True, parts=parts)
    fast = model(ids, use_cache=False, logits_to_keep=keep, prefill_chunk_size=piece if parts == "all" else length).logits.float()
    set_path(model, fast=True)
    error = float((fast - reference).norm() / reference.norm())
    agree = float((fast.argmax(-1) == reference.argmax(-1)).float().mean())
    return {
        "length": length, "piece": piece, "positions": keep, "rel_l2_error": error, "argmax_agreement": agree,
        "tolerance": tolerance,
        "passed": None if tolerance is None else bool(error <= tolerance and math.isfinite(error)),
        "gla": "fla" if device.type == "cuda" and fla_available() else "chunk",
    }


@contextlib.contextmanager
def spiking_layer_comparison(model: SpikingBrainForCausalLM):
    """Inside the block, every ``SpikingLinear`` call on the fast backend is repeated on the PyTorch count
    form of the same layer with the same input; yields ``name -> worst relative L2 error`` so far.

    Spike coding is discontinuous: an element whose ``x / v_th`` lies within the last bits of ``v_th``
    of a rounding tie takes the neighbouring count on either path, and through a random-weight stack such
    flips breed more flips, so logits of two correct paths drift apart. Comparing each layer on the same
    input isolates the kernel: there the paths differ only by those few flips (~1e-4 relative in
    float32). Only the spiking linears take the fast path inside the block.
    """
    errors: dict[str, float] = {}
    busy = [False]

    def compare(name: str):
        def hook(module: SpikingLinear, args, out: torch.Tensor) -> None:
            if busy[0]:
                return
            busy[0] = True
            fast_coding = module.coding
            module.coding = dataclasses.replace(fast_coding, backend="torch")
            try:
                reference = module(args[0]).float()
            finally:
                module.coding, busy[0] = fast_coding, False
            errors[name] = max(errors.get(name, 0.0), float((out.float() - reference).norm() / reference.norm()))

        return hook

    set_path(model, fast=True, parts="spiking")
    handles = [m.register_forward_hook(compare(n)) for n, m in model.named_modules() if isinstance(m, SpikingLinear)]
    try:
        yield errors
    finally:
        for handle in handles:
            handle.remove()
        set_path(model, fast=True)


def judge_layers(errors: dict[str, float], tolerance: float, **facts) -> dict:
    """The worst layer of :func:`spiking_layer_comparison`'s errors against ``tolerance``."""
    if not errors:
        raise ValueError("no SpikingLinear was called: nothing to judge")
    worst = max(errors, key=errors.get)
    return {
        **facts, "layers_checked": len(errors), "worst_layer": worst, "rel_l2_error": errors[worst],
        "tolerance": tolerance, "passed": bool(errors[worst] <= tolerance and math.isfinite(errors[worst])),
    }


@torch.no_grad()
def per_layer_guard(model: SpikingBrainForCausalLM, length: int, tolerance: float, seed: int = 0) -> dict:
    """A ``length``-token prefill with every spiking linear compared on its real input
    (:func:`spiking_layer_comparison`); the worst layer against ``tolerance``."""
    device = model.lm_head.weight.device
    gen = torch.Generator(device="cpu").manual_seed(seed)
    ids = torch.randint(0, model.config.vocab_size, (1, length), generator=gen).to(device)
    with spiking_layer_comparison(model) as errors:
        model(ids, use_cache=False, logits_to_keep=1, prefill_chunk_size=length)
    return judge_layers(errors, tolerance, length=length)


def guard_exit_status(guards: dict[str, dict]) -> int:
    """The script's exit status: 1 (and the names printed) if any judged guard failed, else 0."""
    failed = [name for name, g in guards.items() if g["passed"] is False]
    if failed:
        print(f"CORRECTNESS GUARD FAILED: {failed}", flush=True)
    return int(bool(failed))


def float32_guards(
    config: SpikingBrainConfig, device: torch.device, length: int, piece: int, layers: int = 4, w8aspike: bool = True,
) -> dict:
    """Fast path vs reference path in float32 on a ``layers``-deep model of full width (bf16 and W8ASpike).

    ``w8aspike=False`` checks the bf16 architecture only (a run that times no W8ASpike model).

    In bf16 the two paths round differently at every layer and a random-weight stack of 28 layers
    amplifies that (and spike counts near a rounding tie flip), so the bf16 guard can only be loose. In
    float32 the paths agree to ~1e-5 unless one of them computes something else: this is the sharp test.
    """
    import copy

    from sb_layers.models.spikingbrain import to_w8aspike

    small = copy.deepcopy(config)
    small.num_hidden_layers = layers
    small.attn_layers = list(range(1, layers, 2))
    print(f"float32 guard: {layers} full-width layers, {length} tokens (a cold machine first compiles fla's kernels)", flush=True)
    model = build_spikingbrain(small, device, torch.float32)
    results = {"float32-bf16-arch": guard(model, length, 64, 1e-3, piece)}
    if not w8aspike:
        del model
        release()
        results["float32-bf16-arch"]["layers"] = layers
        print(f"guard float32-bf16-arch ({layers} layers, float32): {results['float32-bf16-arch']}", flush=True)
        return results
    model.config.coding = {"backend": "auto"}
    w8 = to_w8aspike(model)
    del model
    release()
    # Logits of a W8ASpike stack drift through count flips (see per_layer_guard): recorded, not judged.
    results["float32-w8aspike"] = guard(w8, length, 64, None, piece)
    results["float32-w8aspike-linears-only"] = guard(w8, length, 64, None, piece, parts="spiking")
    # The judged check: each spiking projection against its PyTorch count form on the same input.
    results["float32-w8aspike-per-layer"] = per_layer_guard(w8, length, 1e-3)
    del w8
    release()
    for name, result in results.items():
        result["layers"] = layers
        print(f"guard {name} ({layers} layers, float32): {result}", flush=True)
    return results


# --- FLOPs --------------------------------------------------------------------------------------------


def linear_flops_per_token(layers: nn.Module) -> int:
    """2 x (weights of every Linear under ``layers``): one multiply-add per weight per token."""
    return sum(2 * m.in_features * m.out_features for m in layers.modules() if isinstance(m, nn.Linear))


def causal_window_keys(length: int, window: int | None) -> int:
    """Sum over queries ``i < length`` of the keys they attend: ``min(i + 1, window)``."""
    if window is None or window >= length:
        return length * (length + 1) // 2
    return window * (window + 1) // 2 + (length - window) * window


def spikingbrain_prefill_flops(config: SpikingBrainConfig, model: SpikingBrainForCausalLM, length: int) -> float:
    """Useful FLOPs of a prefill with last-position logits.

    Linears: 2 per weight per token (all 28 layers; lm_head for one position). SWA: QK^T and PV,
    ``4 H D`` per attended key, ``min(i + 1, window)`` keys for query ``i``. GLA (chunk form, chunk C):
    per token and head, the state read-out and update ``4 Dk Dv`` plus the causal intra-chunk scores and
    mixing ``(C + 1)(Dk + Dv)`` on average. Norms, rotary and elementwise work are not counted.
    """
    heads, dim = config.num_attention_heads, config.head_dim
    linear = linear_flops_per_token(model.model.layers) * length + 2 * config.hidden_size * config.vocab_size
    swa_layers = len(config.attn_layers)
    gla_layers = config.num_hidden_layers - swa_layers
    swa = swa_layers * 4 * heads * dim * causal_window_keys(length, config.sliding_window)
    gla = gla_layers * length * heads * (4 * dim * dim + (FLA_CHUNK + 1) * 2 * dim)
    return float(linear + swa + gla)


def qwen_prefill_flops(config, model, length: int) -> float:
    """Useful FLOPs of a Qwen2 prefill with last-position logits: linears plus causal attention."""
    dim = config.hidden_size // config.num_attention_heads
    linear = linear_flops_per_token(model.model.layers) * length + 2 * config.hidden_size * config.vocab_size
    attention = config.num_hidden_layers * 4 * config.num_attention_heads * dim * causal_window_keys(length, None)
    return float(linear + attention)


# --- device rates -------------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def wall_ms(fn: Callable[[], object], device: torch.device, repeat: int) -> tuple[float, list[float]]:
    """Median wall time of ``fn`` (synchronized) over ``repeat`` runs, and all runs."""
    times = []
    for _ in range(repeat):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), times


def matmul_tflops(device: torch.device, shapes: list[tuple[int, int, int]], dtype=torch.bfloat16) -> dict:
    """bf16 GEMM rate (TFLOP/s) of each ``(M, K, N)`` shape, median of 10 after warm-up; and the best."""
    rates = {}
    for m, k, n in shapes:
        a = torch.randn(m, k, device=device, dtype=dtype)
        b = torch.randn(k, n, device=device, dtype=dtype)
        for _ in range(3):
            a @ b
        ms, _ = wall_ms(lambda: a @ b, device, 10)
        rates[f"{m}x{k}x{n}"] = 2 * m * k * n / (ms * 1e-3) / 1e12
        del a, b
    return {"by_shape": rates, "best": max(rates.values())}


def copy_bandwidth(device: torch.device, num_bytes: int = 2 * GIB) -> float:
    """Device-to-device copy bandwidth in bytes/s (read + write), median of 10."""
    src = torch.empty(num_bytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    ms, _ = wall_ms(lambda: dst.copy_(src), device, 10)
    del src, dst
    return 2 * num_bytes / (ms * 1e-3)


def device_label(device: torch.device) -> str:
    if device.type != "cuda":
        return "cpu"
    props = torch.cuda.get_device_properties(device)
    return f"{props.name} ({props.multi_processor_count} SMs, {props.total_memory / GIB:.0f} GiB), torch {torch.__version__}"


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / GIB if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def write_json(path: str | Path, payload: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2))
    print(f"wrote {path}", flush=True)


def parse_lengths(text: str) -> list[int]:
    """``"4k,32k,128k"`` or ``"4096,32768"`` -> ``[4096, 32768, ...]`` (k = 1024)."""
    lengths = []
    for item in text.split(","):
        item = item.strip().lower()
        lengths.append(int(item[:-1]) * 1024 if item.endswith("k") else int(item))
    return lengths
