"""W8ASpike on a CPU in integers against the release's float fake quantization, bf16 and float32.

One run measures, on this machine and in this process (ratios against baselines timed alongside):

1. Per projection (``gate_proj`` shapes: the model's below and SpikingBrain-7B's 3584 -> 18944), one
   token and 512 tokens: ``sb_kernels.w8aspike_linear_cpu`` (int8 codes, ``torch._int_mm`` per group of
   128 inputs) against the release's forward (``round(w / s) * s`` recomputed in float32 on every call,
   then a float32 matmul of the spike-quantized input), a float32 ``F.linear`` and a bf16 one.
2. A mid-size SpikingBrain model (hidden 1536, 4 layers by default; GLA and SWA layers alternating),
   one-token decode with the model's cache (as ``generate`` runs it, after a prompt) and a 512-token
   prefill, in four forms of the same model: float32 and bf16 (the float model), the release-style
   W8ASpike (``to_w8aspike``: float32 weights, fake-quantized per call) and our W8ASpike packed to int8
   (``pack_int8``: int8 codes + residual, the unspiked parts in bf16), whose projections run the integer
   CPU path. Weight scales are shrunk by ``--scale-shrink`` (0.9) so that about 1% of the codes lie
   past int8, as in the released checkpoint (the residual path runs too; the tables give the share).
3. Memory: parameter + buffer bytes of each form (``resident_bytes``), of SpikingBrain-7B built on the
   meta device (bf16 float model, release-style W8ASpike in bf16, packed int8), and the resident set
   size (VmRSS) of a fresh process holding each mid-size form (``--rss`` runs one such process).

Timing: ``torch.set_num_threads`` (2 by default), the forms interleaved in every round (a machine shared
with other jobs slows them alike), the median of ``--repeat`` rounds; ``uptime`` before and after is
printed and recorded. Usage::

    .venv/bin/python benchmarks/bench_cpu_w8aspike.py            # full run (~5 min on 2 cores)
    .venv/bin/python benchmarks/bench_cpu_w8aspike.py --quick    # small shapes, a smoke test

Writes ``$OUT/bench_cpu_w8aspike.json`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import datetime
import gc
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, rel_err, write_json  # noqa: E402

from sb_kernels import int_mm_available, split_weight_codes, w8aspike_linear_cpu  # noqa: E402
from sb_layers.models.spikingbrain import SpikingBrainConfig, SpikingBrainForCausalLM, pack_int8, resident_bytes, to_w8aspike  # noqa: E402
from sb_layers.models.spikingbrain.w8aspike import w8aspike_config  # noqa: E402
from sb_layers.spiking_linear import SpikingLinear  # noqa: E402
from sb_neurons import spike_count  # noqa: E402

SHAPE_7B = dict(vocab_size=152064, hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                intermediate_size=18944)


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
                  if line.startswith("Model name")), platform.processor())
    return {"cpu": model, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "int_mm": int_mm_available(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def interleaved(fns: dict, repeat: int, warmup: int = 1) -> dict[str, float]:
    """Median milliseconds of each callable, the callables run in turn in every round."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


# --- 1. one projection ----------------------------------------------------------------------------------

def release_fake_quant(x, weight, scales, group, k=3.0):
    """The release's W8ASpike forward of one projection: spike-quantize the input, fake-quantize the float32
    weight (``round(w / s) * s`` per group, every call) and multiply in float32."""
    counts, v_th = spike_count(x, k)
    n, kk = weight.shape
    w_q = (torch.round(weight.reshape(n, kk // group, group) / scales) * scales).reshape(n, kk)
    return F.linear(counts * v_th, w_q)


def projection_rows(shapes, tokens, repeat, shrink):
    rows = []
    for label, (n, kk) in shapes.items():
        g = torch.Generator().manual_seed(0)
        weight = torch.randn(n, kk, generator=g) * 0.02
        scales = weight.reshape(n, kk // 128, 128).abs().amax(-1, keepdim=True) / 127 * shrink
        base, residual = split_weight_codes(torch.round(weight.reshape(n, kk // 128, 128) / scales).reshape(n, kk).to(torch.int32))
        w_bf16 = weight.bfloat16()
        for m in tokens:
            x = torch.randn(m, kk, generator=g)
            xb = x.bfloat16()
            fns = {
                "int8": lambda: w8aspike_linear_cpu(x, base, scales, residual=residual),
                "fake-quant f32": lambda: release_fake_quant(x, weight, scales, 128),
                "float32": lambda: F.linear(x, weight),
                "bf16": lambda: F.linear(xb, w_bf16),
            }
            with torch.no_grad():
                ms = interleaved(fns, repeat if n * kk * m < 2**30 else 5)  # the 7B shape at 512 tokens: seconds per round
                err = rel_err(fns["int8"](), fns["fake-quant f32"]())
            rows.append({"projection": label, "N x K": f"{n} x {kk}", "tokens": m, **{f"{k} ms": v for k, v in ms.items()},
                         "vs fake-quant": ms["fake-quant f32"] / ms["int8"], "vs float32": ms["float32"] / ms["int8"],
                         "vs bf16": ms["bf16"] / ms["int8"], "residual share": (residual.nnz if residual else 0) / (n * kk),
                         "rel err vs fake-quant": err})
        del weight, base, residual, w_bf16
        gc.collect()
    return rows


# --- 2. the model -----------------------------------------------------------------------------------------

def mid_config(args) -> SpikingBrainConfig:
    return SpikingBrainConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=args.hidden // 128,
        num_key_value_heads=2, intermediate_size=args.intermediate, sliding_window=4096, initializer_range=0.02,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )


def to_float_parts(model, dtype):
    """``model`` with its float parameters and buffers in ``dtype``, the W8ASpike scales kept float32."""
    for module in model.modules():
        for name, param in list(module.named_parameters(recurse=False)):
            if param.is_floating_point():
                param.data = param.data.to(dtype)
        for name, buf in list(module.named_buffers(recurse=False)):
            if buf.is_floating_point() and name != "scales":
                setattr(module, name, buf.to(dtype))
    return model


def build_forms(args, which=None) -> dict:
    """The mid-size model's forms: float32, bf16, release-style W8ASpike (fake quant, float32), int8."""
    torch.manual_seed(0)
    forms = {}
    source = SpikingBrainForCausalLM(mid_config(args)).float().eval()
    if which in (None, "float32"):
        forms["float32"] = source
    if which in (None, "bf16"):
        forms["bf16"] = copy.deepcopy(source).to(torch.bfloat16)
    if which in (None, "fake-quant f32", "int8"):
        w8 = to_w8aspike(source)
        with torch.no_grad():
            for layer in w8.modules():
                if isinstance(layer, SpikingLinear) and layer.weight_quantizer is not None:
                    layer.weight_quantizer.scales.mul_(args.scale_shrink)  # ~1% of codes past int8, as released
        if which in (None, "fake-quant f32"):
            forms["fake-quant f32"] = w8  # backend "torch": round(w / s) * s in float32 on every call
        if which in (None, "int8"):
            forms["int8"] = to_float_parts(pack_int8(copy.deepcopy(w8) if which is None else w8), torch.bfloat16)
    if which not in (None, "float32"):
        del source
    return forms


def decode_and_prefill(forms, args) -> tuple[list[dict], dict]:
    g = torch.Generator().manual_seed(1)
    prompt = torch.randint(3, args.vocab, (1, args.prefill), generator=g)
    token = torch.randint(3, args.vocab, (1, 1), generator=g)
    caches = {}
    with torch.no_grad():
        for name, model in forms.items():
            caches[name] = model(prompt[:, : args.context], use_cache=True).past_key_values

        def decode(name):
            # One generate step: the token goes through the model with the cache, which grows by it (as in
            # generate; over the rounds the context grows from --context by a few tokens, alike for all forms).
            model, cache = forms[name], caches[name]
            return lambda: model(token, past_key_values=cache, use_cache=True)

        decode_ms = interleaved({name: decode(name) for name in forms}, 2 * args.repeat)
        prefill_ms = interleaved({name: (lambda m=model: m(prompt, use_cache=False)) for name, model in forms.items()},
                                 max(3, args.repeat // 3))
        logits = {name: model(prompt[:, :64]).logits for name, model in forms.items()}
        # The integer path alone: the fake-quant model packed as it is (float32 unspiked parts), so that only
        # the projections' arithmetic differs (the int8 form's bf16 parts move spike counts across boundaries).
        packed_f32 = pack_int8(copy.deepcopy(forms["fake-quant f32"]))
        logits["int8, float32 rest"] = packed_f32(prompt[:, :64]).logits
        del packed_f32
    rows = []
    for name in forms:
        rows.append({"form": name, "decode ms": decode_ms[name], "prefill ms": prefill_ms[name],
                     "int8 decode speedup": decode_ms[name] / decode_ms["int8"],
                     "int8 prefill speedup": prefill_ms[name] / prefill_ms["int8"],
                     "tokens/s prefill": args.prefill / prefill_ms[name] * 1e3})
    agreement = {
        "int8 (float32 rest) vs fake-quant logits rel err": rel_err(logits["int8, float32 rest"], logits["fake-quant f32"]),
        "int8 vs fake-quant logits rel err": rel_err(logits["int8"].float(), logits["fake-quant f32"].float()),
        "fake-quant vs float32 logits rel err": rel_err(logits["fake-quant f32"].float(), logits["float32"].float()),
    }
    return rows, agreement


# --- 3. memory --------------------------------------------------------------------------------------------

def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def trim() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # give freed heap pages back, so that VmRSS shows what is held
    except OSError:
        pass


def rss_of_form(form: str, args) -> dict:
    """In this (fresh) process: VmRSS before building ``form`` and after, with everything else freed."""
    trim()
    before = rss_bytes()
    forms = build_forms(args, which=form)
    model = forms.pop(form)
    forms.clear()
    trim()
    return {"form": form, "rss_delta": rss_bytes() - before, "resident_bytes": resident_bytes(model)["total"]}


def memory_7b() -> list[dict]:
    config = SpikingBrainConfig(**SHAPE_7B)
    rows = []
    for label, make in (
        ("bf16 float model", lambda: SpikingBrainForCausalLM.build(config, device="meta", dtype=torch.bfloat16)),
        ("W8ASpike, float weights (bf16)", lambda: SpikingBrainForCausalLM.build(w8aspike_config(config), device="meta", dtype=torch.bfloat16)),
        ("W8ASpike, float weights (float32, as released)", lambda: SpikingBrainForCausalLM.build(w8aspike_config(config), device="meta", dtype=torch.float32)),
        ("W8ASpike packed int8 (rest bf16)", lambda: pack_int8(SpikingBrainForCausalLM.build(w8aspike_config(config), device="meta", dtype=torch.bfloat16))),
    ):
        sizes = resident_bytes(make())
        rows.append({"7B form": label, "GB": sizes["total"] / 1e9, **{f"{k} GB": v / 1e9 for k, v in sizes.items() if k != "total"}})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=1536)
    parser.add_argument("--intermediate", type=int, default=4096)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=16384)
    parser.add_argument("--prefill", type=int, default=512)
    parser.add_argument("--context", type=int, default=256, help="prompt tokens in the cache of the decode step")
    parser.add_argument("--repeat", type=int, default=12)
    parser.add_argument("--scale-shrink", type=float, default=0.9, help="scales x this: ~1%% of codes past int8 (0.9)")
    parser.add_argument("--quick", action="store_true", help="small shapes and few repeats (a smoke test)")
    parser.add_argument("--rss", default=None, help=argparse.SUPPRESS)  # internal: measure one form in this process
    args = parser.parse_args()
    if args.quick:
        args.hidden, args.intermediate, args.layers, args.vocab, args.prefill, args.context, args.repeat = 256, 512, 2, 1024, 64, 32, 3
    torch.set_num_threads(args.threads)
    if args.rss:
        print(json.dumps(rss_of_form(args.rss, args)))
        return

    info = machine()
    info["uptime_before"] = uptime()
    print(f"# W8ASpike on the CPU: {info['cpu']}, {args.threads} threads, torch {info['torch']} "
          f"({info['cpu_capability']}, torch._int_mm on CPU: {info['int_mm']}), {info['date']}")
    print(f"load before: {info['uptime_before']}")

    shapes = {"model gate_proj": (args.intermediate, args.hidden)}
    if not args.quick:
        shapes["7B gate_proj"] = (SHAPE_7B["intermediate_size"], SHAPE_7B["hidden_size"])
    projections = projection_rows(shapes, (1, args.prefill), max(5, args.repeat), args.scale_shrink)
    print_table("One projection (int8 = w8aspike_linear_cpu; ratios = baseline ms / int8 ms)", projections,
                ["projection", "N x K", "tokens", "int8 ms", "fake-quant f32 ms", "float32 ms", "bf16 ms",
                 "vs fake-quant", "vs float32", "vs bf16", "residual share"])

    forms = build_forms(args)
    sizes = {name: resident_bytes(model) for name, model in forms.items()}
    packed_layers = [m for m in forms["int8"].modules() if hasattr(m, "weight_int8")]
    residual_share = sum(m.residual_values.numel() for m in packed_layers) / sum(m.weight_int8.numel() for m in packed_layers)
    models, agreement = decode_and_prefill(forms, args)
    del forms
    trim()
    print_table(f"Mid-size model (hidden {args.hidden}, intermediate {args.intermediate}, {args.layers} layers, vocab {args.vocab}): "
                f"decode after {args.context} tokens, prefill of {args.prefill}; speedup = form ms / int8 ms", models,
                ["form", "decode ms", "int8 decode speedup", "prefill ms", "int8 prefill speedup", "tokens/s prefill"])
    print(f"\nint8 model: {residual_share:.2%} of its spiking projections' codes lie past int8 (the residual)")
    print(f"logits (64 tokens), relative error: int8 with float32 unspiked parts vs fake-quant "
          f"{agreement['int8 (float32 rest) vs fake-quant logits rel err']:.2e}; int8 (bf16 unspiked parts) vs fake-quant "
          f"{agreement['int8 vs fake-quant logits rel err']:.2e}; fake-quant vs float32 {agreement['fake-quant vs float32 logits rel err']:.2e}")

    memory = []
    for name in ("float32", "bf16", "fake-quant f32", "int8"):
        result = subprocess.run([sys.executable, __file__, "--rss", name, "--threads", str(args.threads), "--hidden", str(args.hidden),
                                 "--intermediate", str(args.intermediate), "--layers", str(args.layers), "--vocab", str(args.vocab),
                                 "--scale-shrink", str(args.scale_shrink)] + (["--quick"] if args.quick else []),
                                capture_output=True, text=True, check=True)
        measured = json.loads(result.stdout.strip().splitlines()[-1])
        memory.append({"form": name, "parameters+buffers MB": measured["resident_bytes"] / 1e6,
                       "RSS growth MB": measured["rss_delta"] / 1e6})
    print_table("Mid-size model memory (a fresh process per form)", memory, ["form", "parameters+buffers MB", "RSS growth MB"])
    big = memory_7b()
    print_table("SpikingBrain-7B shape on the meta device (parameters + buffers)", big,
                ["7B form", "GB"] + sorted({k for row in big for k in row if k.endswith(" GB")}))

    info["uptime_after"] = uptime()
    print(f"\nload after: {info['uptime_after']}")
    path = write_json("bench_cpu_w8aspike", {"machine": info, "args": vars(args), "projections": projections, "model": models,
                                             "agreement": agreement, "residual_share": residual_share, "memory_mid": memory, "memory_7b": big,
                                             "resident_bytes_mid": sizes})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
