"""Tiny randomly initialized HuggingFace models built from configs: for demos, docs and tests (no downloads).

``tiny_model(arch)`` builds one of :data:`TINY_ARCHS` with 2 layers, width 32 and a 64-token vocabulary,
in eval mode, its weights drawn from ``torch.Generator`` state seeded by ``seed`` (the global RNG is
restored afterwards). Causal LMs: ``gpt2`` (transformers' ``Conv1D`` projections), ``llama``, ``qwen2``,
``mistral``, ``opt``; encoder: ``bert`` (masked LM).
"""

from __future__ import annotations

import torch
from torch import nn
from sb_neurons.validation import check_int

TINY_VOCAB = 64
TINY_ARCHS = ("gpt2", "llama", "qwen2", "mistral", "opt", "bert")
CAUSAL_ARCHS = ("gpt2", "llama", "qwen2", "mistral", "opt")


def _build(arch: str) -> nn.Module:
    import transformers as tf

    common = dict(vocab_size=TINY_VOCAB, bos_token_id=0, eos_token_id=0)
    decoder = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=64, pad_token_id=0, **common,
    )
    if arch == "gpt2":
        return tf.GPT2LMHeadModel(tf.GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=64, **common))
    if arch == "llama":
        return tf.LlamaForCausalLM(tf.LlamaConfig(**decoder))
    if arch == "qwen2":
        return tf.Qwen2ForCausalLM(tf.Qwen2Config(**decoder))
    if arch == "mistral":
        return tf.MistralForCausalLM(tf.MistralConfig(sliding_window=None, **decoder))
    if arch == "opt":
        return tf.OPTForCausalLM(
            tf.OPTConfig(
                hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64,
                word_embed_proj_dim=32, pad_token_id=0, **common,
            )
        )
    return tf.BertForMaskedLM(
        tf.BertConfig(vocab_size=TINY_VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, max_position_embeddings=64)
    )


def tiny_model(arch: str, seed: int = 0) -> nn.Module:
    """A tiny random ``arch`` model (one of :data:`TINY_ARCHS`) in eval mode, reproducible from ``seed``."""
    if arch not in TINY_ARCHS:
        raise ValueError(f"arch must be one of {', '.join(TINY_ARCHS)}, got {arch!r}")
    check_int(seed, "seed")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _build(arch).eval()


def tiny_batches(count: int = 4, batch: int = 2, length: int = 16, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """``count`` random token batches ``{"input_ids", "attention_mask"}`` of shape ``[batch, length]`` for a tiny model."""
    for name, value in (("count", count), ("batch", batch), ("length", length)):
        check_int(value, name, minimum=1)
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        ids = torch.randint(0, TINY_VOCAB, (batch, length), generator=generator)
        batches.append({"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    return batches


__all__ = ["CAUSAL_ARCHS", "TINY_ARCHS", "TINY_VOCAB", "tiny_batches", "tiny_model"]
