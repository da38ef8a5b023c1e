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
