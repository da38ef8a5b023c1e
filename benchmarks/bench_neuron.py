"""Multi-step LIF neuron, forward + backward, against SpikingJelly 2.0 and snnTorch (same run).

Our kernel: soft-reset LIF (decay 0.5, threshold 1, sigmoid surrogate alpha 4), fp32 input. Bytes it
must move per neuron-step: forward reads x and writes the spikes (4 + 4, or 4 + 2 with half-width
spikes), backward reads x and dL/ds and writes dL/dx (4 + 4 + 4, or 4 + 2 + 4): the bandwidth floor is
those bytes over the device-to-device copy bandwidth measured in the same run.
SpikingJelly: ``LIFNode(tau=2, decay_input=False, v_reset=None, surrogate Sigmoid(4), step_mode="m")``
(its fused multi-step kernels; the same work per neuron-step, a slightly different reset order).
snnTorch: ``Leaky(beta=0.5)``, a Python loop over T.
Our calls are timed as a user makes them (checked: one host read of the NaN/Inf flag per forward;
unchecked: ``check_finite=False``), and the kernels alone (back-to-back launches, host time hidden), with
a sweep of neurons and warps per program at T = 16, 4M neurons.
"""

from __future__ import annotations

import torch

from _common import copy_bandwidth, device_name, kernel_resources, print_table, rel_err, time_ms, write_json
from sb_kernels import multistep_neuron
from sb_kernels import neuron as kn

CONFIGS = [(4, 1 << 20), (4, 64 << 20), (16, 1 << 20), (16, 4 << 20), (16, 16 << 20), (16, 64 << 20), (32, 4 << 20), (32, 16 << 20)]
KW = dict(decay=0.5, reset="soft", surrogate="sigmoid", surrogate_alpha=4.0)


def check() -> dict:
    steps, n = 16, 4 << 20
    x = (torch.randn(steps, n, device="cuda") * 0.7).requires_grad_()
    s, v = multistep_neuron(x, 1.0, backend="triton", **KW)
    g = torch.randn_like(s)
    (gx,) = torch.autograd.grad((s * g).sum(), x)
    s32, v32 = multistep_neuron(x.detach(), 1.0, backend="torch", **KW)
    x64 = x.detach().double().requires_grad_()
    s64, v64 = multistep_neuron(x64, 1.0, backend="torch", **KW)
    (gx64,) = torch.autograd.grad((s64 * g.double()).sum(), x64)
    return {"T": steps, "N": n, "spikes_equal_fp32_ref": bool(torch.equal(s, s32)),
            "spike_mismatch_vs_fp64": int((s.double() != s64).sum()), "v_last_rel_err_fp64": rel_err(v, v64),
            "grad_rel_err_fp64": rel_err(gx, gx64)}


def time_fwd_bwd(forward, x: torch.Tensor, repeat: int = 30) -> tuple[float, float]:
    """Median forward and backward times; the backward through ``autograd.grad`` (no accumulation into
    ``x.grad``, whose read-modify-write would add 12 bytes per element to either side)."""
    out = forward(x)
    grad = torch.randn_like(out)
    t_fwd = time_ms(lambda: forward(x), repeat=repeat)
    t_bwd = time_ms(lambda: torch.autograd.grad(out, x, grad, retain_graph=True), repeat=repeat)
    return t_fwd, t_bwd


def _config(spike_dtype: torch.dtype, check_finite: bool = False) -> "kn._Config":
    return kn._Config(decay=KW["decay"], reset_hard=False, v_reset=0.0, signed=False, rounding=False,
                      surrogate_id=kn.SURROGATE_IDS["sigmoid"], alpha=KW["surrogate_alpha"], detach_reset=False,
                      v_init_value=0.0, v_th_value=1.0, spike_dtype=spike_dtype, check_finite=check_finite)


def kernel_times(x: torch.Tensor, spike_dtype: torch.dtype, block: tuple[int, int] | None = None,
                 launches: int = 10) -> tuple[float, float]:
    """Forward and backward kernels alone (unchecked, no autograd): ``launches`` back-to-back launches
    per timed run, so that the host's launch time hides behind the GPU's work; ms per launch. ``block``:
    (neurons, warps) per program for both kernels, else each kernel's default."""
    cfg = _config(spike_dtype)
    grad = torch.randn(x.shape, device=x.device).to(spike_dtype)
    fwd_launch = (kn.FORWARD_BLOCK, kn.FORWARD_WARPS) if block is None else block
    bwd_launch = (kn.BLOCK_NEURONS, 4) if block is None else block

    def fwd():
        for _ in range(launches):
            kn._launch_forward(x, None, None, cfg, *fwd_launch)

    def bwd():
        for _ in range(launches):
            kn._launch_backward(x, grad, None, None, None, cfg, False, *bwd_launch)

    return time_ms(fwd, repeat=10) / launches, time_ms(bwd, repeat=10) / launches


def launch_sweep(copy_bw: float) -> list[dict]:
    """Neurons and warps per program at T = 16, 4M neurons, float16 spikes (kernels alone)."""
    steps, n = 16, 4 << 20
    x = torch.randn(steps, n, device="cuda") * 0.7
    rows = []
    for block, warps in ((128, 4), (64, 2), (64, 1), (256, 8), (512, 4)):
        fwd, bwd = kernel_times(x, torch.float16, (block, warps))
        rows.append({"T": steps, "N": "4M", "block": block, "num_warps": warps, "ms_fwd_kernel": fwd, "ms_bwd_kernel": bwd,
                     "fwd_floor_frac": 6 * steps * n / copy_bw * 1e3 / fwd, "bwd_floor_frac": 10 * steps * n / copy_bw * 1e3 / bwd})
    return rows


def bench(steps: int, n: int, copy_bw: float, sj_cls) -> dict:
    x = (torch.randn(steps, n, device="cuda") * 0.7).requires_grad_()
    row = {"T": steps, "N": f"{n >> 20}M"}
    f32 = lambda inp: multistep_neuron(inp, 1.0, backend="triton", **KW).spikes  # noqa: E731
    f16 = lambda inp: multistep_neuron(inp, 1.0, backend="triton", spike_dtype=torch.float16, **KW).spikes  # noqa: E731
    f16_async = lambda inp: multistep_neuron(  # noqa: E731
        inp, 1.0, backend="triton", spike_dtype=torch.float16, check_finite=False, **KW).spikes
    row["ms_fwd"], row["ms_bwd"] = time_fwd_bwd(f32, x)
    row["ms_fwd_half"], row["ms_bwd_half"] = time_fwd_bwd(f16, x)
    row["ms_fwd_half_nocheck"], row["ms_bwd_half_nocheck"] = time_fwd_bwd(f16_async, x)
    row["ms_fwd_kernel_half"], row["ms_bwd_kernel_half"] = kernel_times(x.detach(), torch.float16)
    elems = steps * n
    floor_fwd, floor_bwd = 8 * elems / copy_bw * 1e3, 12 * elems / copy_bw * 1e3
    floor_fwd_h, floor_bwd_h = 6 * elems / copy_bw * 1e3, 10 * elems / copy_bw * 1e3
    row["floor_frac_fwd"] = floor_fwd / row["ms_fwd"]
    row["floor_frac_bwd"] = floor_bwd / row["ms_bwd"]
    row["floor_frac_fwd_half"] = floor_fwd_h / row["ms_fwd_half"]
    row["floor_frac_bwd_half"] = floor_bwd_h / row["ms_bwd_half"]
    row["floor_frac_fwd_half_nocheck"] = floor_fwd_h / row["ms_fwd_half_nocheck"]
    row["floor_frac_bwd_half_nocheck"] = floor_bwd_h / row["ms_bwd_half_nocheck"]
    row["floor_frac_fwd_kernel_half"] = floor_fwd_h / row["ms_fwd_kernel_half"]
    row["floor_frac_bwd_kernel_half"] = floor_bwd_h / row["ms_bwd_kernel_half"]
    if sj_cls is not None:
        node = sj_cls()

        def sj_forward(inp):
            node.reset()
            return node(inp)

        try:
            row["ms_sj_fwd"], row["ms_sj_bwd"] = time_fwd_bwd(sj_forward, x)
        except Exception as err:  # noqa: BLE001 - reported in the row, not hidden
            row["sj_error"] = repr(err)[:200]
            return row
        sj_total = row["ms_sj_fwd"] + row["ms_sj_bwd"]
        row["sj_over_ours"] = sj_total / (row["ms_fwd"] + row["ms_bwd"])
        row["sj_over_ours_half"] = sj_total / (row["ms_fwd_half"] + row["ms_bwd_half"])
        row["sj_over_ours_half_nocheck"] = sj_total / (row["ms_fwd_half_nocheck"] + row["ms_bwd_half_nocheck"])
        row["sj_fwd_over_ours"] = row["ms_sj_fwd"] / row["ms_fwd"]
        row["sj_bwd_over_ours"] = row["ms_sj_bwd"] / row["ms_bwd"]
    return row


def snntorch_row(steps: int, n: int, ours_ms: float) -> dict:
    import snntorch as snn

    lif = snn.Leaky(beta=0.5).to("cuda")  # beta is a module buffer, created on the CPU
    x = (torch.randn(steps, n, device="cuda") * 0.7).requires_grad_()

    def step():
        mem = lif.init_leaky()
        spikes = []
        for t in range(steps):
            spk, mem = lif(x[t], mem)
            spikes.append(spk)
        torch.stack(spikes).sum().backward()

    ms = time_ms(step, warmup=2, repeat=5)
    return {"T": steps, "N": f"{n >> 20}M", "ms_snntorch_fwd_bwd": ms, "snntorch_over_ours": ms / ours_ms}


def main() -> None:
    torch.manual_seed(0)
    copy_bw = copy_bandwidth(1 << 30)
    try:
        from spikingjelly.activation_based import neuron, surrogate

        def sj_cls():
            return neuron.LIFNode(tau=2.0, decay_input=False, v_reset=None,
                                  surrogate_function=surrogate.Sigmoid(alpha=4.0), step_mode="m")
        sj_error = None
    except Exception as err:  # report, do not hide: the table then lacks the SpikingJelly columns
        sj_cls, sj_error = None, repr(err)
    checked = check()
    sweep = launch_sweep(copy_bw)
    print_table("neuron: launch sweep (kernels alone, T=16, 4M, fp16 spikes)", sweep, list(sweep[0]))
    rows = []
    for steps, n in CONFIGS:
        rows.append(bench(steps, n, copy_bw, sj_cls))
        print({k: round(v, 4) if isinstance(v, float) else v for k, v in rows[-1].items()}, flush=True)  # progress
        torch.cuda.empty_cache()
    ref = next(r for r in rows if r["T"] == 16 and r["N"] == "4M")
    try:
        snn_rows = [snntorch_row(16, 4 << 20, ref["ms_fwd"] + ref["ms_bwd"])]
    except Exception as err:
        snn_rows = [{"error": repr(err)}]
    print(f"device: {device_name()}; copy bandwidth {copy_bw / 1e9:.0f} GB/s; spikingjelly: {sj_error or 'ok'}")
    print_table("neuron: correctness (T=16, 4M, fp32)", [checked], list(checked))
    print_table("neuron: times and ratios", rows,
                ["T", "N", "ms_fwd", "ms_bwd", "floor_frac_fwd", "floor_frac_bwd", "floor_frac_fwd_half", "floor_frac_bwd_half",
                 "ms_sj_fwd", "ms_sj_bwd", "sj_fwd_over_ours", "sj_bwd_over_ours", "sj_over_ours", "sj_over_ours_half"])
    print_table("neuron: float16 spikes, checked / unchecked / kernels alone", rows,
                ["T", "N", "ms_fwd_half", "ms_bwd_half", "ms_fwd_half_nocheck", "ms_bwd_half_nocheck", "ms_fwd_kernel_half",
                 "ms_bwd_kernel_half", "floor_frac_fwd_half_nocheck", "floor_frac_bwd_half_nocheck", "floor_frac_fwd_kernel_half",
                 "floor_frac_bwd_kernel_half", "sj_over_ours_half", "sj_over_ours_half_nocheck"])
    print_table("neuron: snnTorch (fwd + bwd)", snn_rows, list(snn_rows[0]))
    resources = kernel_resources()
    print_table("compiled kernels (ptxas)", resources, ["kernel", "num_warps", "num_stages", "regs", "spills", "shared_B", "constexprs"])
    write_json("neuron", {"device": device_name(), "copy_GBps": copy_bw / 1e9, "check": checked, "rows": rows, "sweep": sweep,
                          "snntorch": snn_rows, "spikingjelly_error": sj_error, "resources": resources})


if __name__ == "__main__":
    main()
