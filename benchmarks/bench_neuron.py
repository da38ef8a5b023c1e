"""Multi-step LIF neuron, forward + backward, against SpikingJelly 2.0 and snnTorch (same run).

Our kernel: soft-reset LIF (decay 0.5, threshold 1, sigmoid surrogate alpha 4), fp32 input. Bytes it
must move per neuron-step: forward reads x and writes the spikes (4 + 4, or 4 + 2 with half-width
spikes), backward reads x and dL/ds and writes dL/dx (4 + 4 + 4, or 4 + 2 + 4): the bandwidth floor is
those bytes over the device-to-device copy bandwidth measured in the same run.
SpikingJelly: ``LIFNode(tau=2, decay_input=False, v_reset=None, surrogate Sigmoid(4), step_mode="m")``
(its fused multi-step kernels; the same work per neuron-step, a slightly different reset order).
snnTorch: ``Leaky(beta=0.5)``, a Python loop over T.
"""

from __future__ import annotations

import torch

from _common import copy_bandwidth, device_name, kernel_resources, print_table, rel_err, time_ms, write_json
from sb_kernels import multistep_neuron

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


def bench(steps: int, n: int, copy_bw: float, sj_cls) -> dict:
    x = (torch.randn(steps, n, device="cuda") * 0.7).requires_grad_()
    row = {"T": steps, "N": f"{n >> 20}M"}
    f32 = lambda inp: multistep_neuron(inp, 1.0, backend="triton", **KW).spikes  # noqa: E731
    f16 = lambda inp: multistep_neuron(inp, 1.0, backend="triton", spike_dtype=torch.float16, **KW).spikes  # noqa: E731
    row["ms_fwd"], row["ms_bwd"] = time_fwd_bwd(f32, x)
    row["ms_fwd_half"], row["ms_bwd_half"] = time_fwd_bwd(f16, x)
    elems = steps * n
    floor_fwd, floor_bwd = 8 * elems / copy_bw * 1e3, 12 * elems / copy_bw * 1e3
    floor_fwd_h, floor_bwd_h = 6 * elems / copy_bw * 1e3, 10 * elems / copy_bw * 1e3
    row["floor_frac_fwd"] = floor_fwd / row["ms_fwd"]
    row["floor_frac_bwd"] = floor_bwd / row["ms_bwd"]
    row["floor_frac_fwd_half"] = floor_fwd_h / row["ms_fwd_half"]
    row["floor_frac_bwd_half"] = floor_bwd_h / row["ms_bwd_half"]
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
    print_table("neuron: snnTorch (fwd + bwd)", snn_rows, list(snn_rows[0]))
    resources = kernel_resources()
    print_table("compiled kernels (ptxas)", resources, ["kernel", "num_warps", "num_stages", "regs", "spills", "shared_B", "constexprs"])
    write_json("neuron", {"device": device_name(), "copy_GBps": copy_bw / 1e9, "check": checked, "rows": rows,
                          "snntorch": snn_rows, "spikingjelly_error": sj_error, "resources": resources})


if __name__ == "__main__":
    main()
