"""One-query attention (a decode step's SWA) on the GPU: ``sb_kernels.decode_attention`` against SDPA.

SpikingBrain-7B's shape: 28 query heads over 4 key/value heads, head dim 128, bf16, a window of 1,024
or 4,096 keys with a few masked. Baselines in the same run: SDPA with the keys and values repeated per
query head (what ``masked_attention`` did before), and SDPA with each key/value head's query heads
folded into query rows (no copy). Every figure is the GPU time of one call captured in a CUDA graph;
each output is compared with the float64 reference first. A sweep of key steps and programs per SM
follows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import sb_kernels.split_kv_attention as split_kv
from _common import device_name, graph_time_ms, print_table, sweep_rows, write_json
from sb_kernels import decode_attention, decode_attention_reference

HEADS, KV_HEADS, DIM = 28, 4, 128
GROUPS = HEADS // KV_HEADS
SWEEP = [dict(BLOCK_N=block_n, PROGRAMS_PER_SM=per_sm) for block_n in (64, 128) for per_sm in (1, 2, 4)]


def bench(keys_len: int) -> tuple[dict, list[dict]]:
    torch.manual_seed(keys_len)
    q = torch.randn(1, HEADS, 1, DIM, device="cuda", dtype=torch.bfloat16)
    keys = torch.randn(1, KV_HEADS, keys_len, DIM, device="cuda", dtype=torch.bfloat16)
    values = torch.randn_like(keys)
    allowed = torch.ones(1, 1, keys_len, dtype=torch.bool, device="cuda")
    allowed[..., :7] = False  # e.g. the masked placeholders of a filled window
    ref = decode_attention_reference(q.double(), keys.double(), values.double(), allowed)

    def repeated():
        k, v = keys.repeat_interleave(GROUPS, 1), values.repeat_interleave(GROUPS, 1)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed[:, None])

    def folded():
        out = F.scaled_dot_product_attention(q.reshape(1, KV_HEADS, GROUPS, DIM), keys, values, attn_mask=allowed[:, None])
        return out.reshape(1, HEADS, 1, DIM)

    def ours():
        return decode_attention(q, keys, values, allowed, backend="triton")

    row = {"keys": keys_len}
    base = graph_time_ms(repeated)
    row["us_sdpa_repeated"] = base * 1e3
    for name, fn in (("sdpa_folded", folded), ("ours", ours)):
        row[f"max_err_{name}"] = float((fn().double() - ref).abs().max())
        t = graph_time_ms(fn)
        row[f"us_{name}"] = t * 1e3
        row[f"sdpa_repeated_over_{name}"] = base / t
    row["max_err_sdpa_repeated"] = float((repeated().double() - ref).abs().max())
    row["kv_TBps_ours"] = 2 * keys.numel() * keys.element_size() / (row["us_ours"] * 1e-6) / 1e12

    shipped = dict(BLOCK_N=split_kv.BLOCK_N, PROGRAMS_PER_SM=split_kv.PROGRAMS_PER_SM)

    def measure(cfg: dict) -> dict:
        split_kv.BLOCK_N, split_kv.PROGRAMS_PER_SM = cfg["BLOCK_N"], cfg["PROGRAMS_PER_SM"]
        try:
            err = float((ours().double() - ref).abs().max())
            t = graph_time_ms(ours)
        finally:
            split_kv.BLOCK_N, split_kv.PROGRAMS_PER_SM = shipped["BLOCK_N"], shipped["PROGRAMS_PER_SM"]
        return dict(max_err=err, us=t * 1e3, sdpa_repeated_over_ours=base / t)

    sweep = sweep_rows(SWEEP, ("BLOCK_N", "PROGRAMS_PER_SM"), shipped, {"keys": keys_len}, measure)
    return row, sweep


def main() -> None:
    print(f"device: {device_name()}")
    rows, sweeps = [], []
    for keys_len in (1024, 4096):
        row, sweep = bench(keys_len)
        rows.append(row)
        sweeps += sweep
    print_table("One-query attention, CUDA graph time per call (SDPA with repeated keys / ours: > 1 means ours is faster)", rows,
                ["keys", "us_sdpa_repeated", "us_sdpa_folded", "us_ours", "sdpa_repeated_over_sdpa_folded",
                 "sdpa_repeated_over_ours", "kv_TBps_ours", "max_err_sdpa_repeated", "max_err_ours"])
    print_table("decode_attention: key steps x programs per SM", sweeps,
                ["keys", "config", "shipped", "us", "sdpa_repeated_over_ours", "max_err", "error"])
    write_json("decode_attention", {"device": device_name(), "rows": rows, "sweeps": sweeps})


if __name__ == "__main__":
    main()
