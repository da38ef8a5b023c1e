"""Hypothesis strategies shared by the property tests."""

from __future__ import annotations

import re

import torch
from hypothesis import strategies as st

shapes = st.lists(st.integers(1, 6), min_size=1, max_size=3).map(tuple)


@st.composite
def float_tensors(draw, dtype=torch.float64, min_dims=1, max_side=8, scale=(1e-3, 1e3)):
    """Finite tensors of random shape whose entries span several orders of magnitude."""
    shape = tuple(draw(st.lists(st.integers(1, max_side), min_size=min_dims, max_size=3)))
    seed = draw(st.integers(0, 2**31 - 1))
    magnitude = draw(st.floats(*scale))
    g = torch.Generator().manual_seed(seed)
    heavy = torch.randn(shape, generator=g, dtype=torch.float64) / torch.rand(shape, generator=g, dtype=torch.float64).clamp_min(0.05)
    return (heavy * magnitude).to(dtype)


@st.composite
def int_counts(draw, signed=True, max_abs=300):
    shape = draw(shapes)
    seed = draw(st.integers(0, 2**31 - 1))
    bound = draw(st.integers(0, max_abs))
    g = torch.Generator().manual_seed(seed)
    low = -bound if signed else 0
    return torch.randint(low, bound + 1, shape, generator=g, dtype=torch.int64)


def names(argument: str) -> str:
    """A ``pytest.raises(match=...)`` pattern: the error names ``argument`` as a whole word.

    ``names("x")`` matches "x must be ..." but not "x_seq must be ..." nor "expected", so a test of one
    argument's validation cannot pass on another argument's error.
    """
    return rf"(?<!\w){re.escape(argument)}(?!\w)"


def left_padded(samples: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """A left-padded batch of 1-d token sequences: ``(ids, attention_mask)``, both ``[len(samples), max_len]``
    long, padding id 0 and mask 0 in front of each shorter sample."""
    width = max(len(sample) for sample in samples)
    ids = torch.zeros(len(samples), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, sample in enumerate(samples):
        ids[row, width - len(sample) :], mask[row, width - len(sample) :] = sample, 1
    return ids, mask


def assert_left_padding_is_invisible(model, samples: list[torch.Tensor], atol: float = 1e-10) -> None:
    """A causal LM's logits for each sample of a left-padded batch equal its logits for the sample alone
    (padding hidden by the attention mask, positions counting real tokens only)."""
    ids, mask = left_padded(samples)
    width = ids.shape[1]
    with torch.no_grad():
        batched = model(ids, attention_mask=mask).logits
        for row, sample in enumerate(samples):
            alone = model(sample[None]).logits[0]
            torch.testing.assert_close(batched[row, width - len(sample) :], alone, rtol=atol, atol=atol)


def mixer_with_state(mixer, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, state=None):
    """One protocol call ``mixer(hidden_states, attention_mask, cache)`` of a mixer or block, ``state`` (None,
    a GLAState, a RollingKVCache, a ParallelState) being its entry of a fresh MixerCache:
    ``(output, the entry after the call)``, for tests about the state a call starts from and leaves."""
    from sb_layers import MixerCache

    cache = MixerCache(mixer.layer_idx + 1)
    if state is not None:
        cache.update_layer_state(mixer.layer_idx, state)
    out = mixer(hidden_states, attention_mask, cache)
    return out, cache.layer_state(mixer.layer_idx)
