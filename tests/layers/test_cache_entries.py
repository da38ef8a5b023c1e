"""Cache entries own their state (issue "One shape, second step", item 2): GLAState, RollingKVCache and
ParallelState each hold their tensors, select batch rows and fill windows themselves, MixerCache asks them
without knowing their types, and a mixer of anyone's with an entry of its own works in HybridBlock and
MixerCache like the package's."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import sb_layers as L
from sb_layers.mixer_cache import check_entry, is_capturable, mix_on_cache
from strategies import mixer_with_state, names

pytestmark = pytest.mark.usefixtures("float64_default")  # exact identities are checked in float64 (tests/conftest.py)

HIDDEN = 16


def _gla(layer_idx: int = 0) -> L.GatedLinearAttention:
    torch.manual_seed(0)
    return L.GatedLinearAttention(HIDDEN, 4, 2, chunk_size=3, layer_idx=layer_idx)


def _swa(window: int | None = 4, sinks: int = 0, layer_idx: int = 0) -> L.SlidingWindowAttention:
    torch.manual_seed(1)
    return L.SlidingWindowAttention(HIDDEN, 4, 2, window=window, rope_theta=100.0, num_sinks=sinks, layer_idx=layer_idx)


def _parallel(window: int | None = 4, sinks: int = 0, layer_idx: int = 0) -> L.ParallelMixer:
    torch.manual_seed(2)
    return L.ParallelMixer(_gla(), _swa(window, sinks), layer_idx=layer_idx)


def _mixer(kind: str, layer_idx: int = 0):
    return {"gla": _gla, "swa": _swa, "parallel": _parallel}[kind](layer_idx=layer_idx)


def _entry_after(mixer, batch: int, length: int, seed: int, decode_steps: int = 0, sinks: int = 0):
    """The mixer's entry after a prompt of ``length`` tokens (``sinks`` of them sink tokens, then row 0
    left-padded) and ``decode_steps`` one-token steps without autograd (which write a full window in place:
    ring order)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length + decode_steps, HIDDEN, generator=gen)
    mask = torch.ones(batch, length + decode_steps, dtype=torch.long)
    mask[0, sinks : sinks + min(2, length - sinks - 1)] = 0
    cache = L.MixerCache(mixer.layer_idx + 1)
    with torch.no_grad():
        mixer(x[:, :length], mask[:, :length], cache)
        for t in range(length, length + decode_steps):
            mixer(x[:, t : t + 1], mask[:, t : t + 1], cache)
    return cache.layer_state(mixer.layer_idx)


# Per-row tensors of each entry (indexed by batch row), and the tensors shared by every row.
def _per_row(entry) -> dict[str, torch.Tensor]:
    if isinstance(entry, L.GLAState):
        return {"recurrent": entry.recurrent}
    if isinstance(entry, L.ParallelState):
        return {**{f"linear.{k}": v for k, v in _per_row(entry.linear).items()}, **{f"softmax.{k}": v for k, v in _per_row(entry.softmax).items()}}
    names_ = ("keys", "values", "key_mask", "sink_keys", "sink_values", "seen_tokens")
    return {name: getattr(entry, name) for name in names_ if getattr(entry, name) is not None}


def _windows(entry) -> list[L.RollingKVCache]:
    if isinstance(entry, L.RollingKVCache):
        return [entry]
    return [entry.softmax] if isinstance(entry, L.ParallelState) else []


@settings(max_examples=15)
@given(
    kind=st.sampled_from(["gla", "swa", "sinks", "parallel"]), batch=st.integers(1, 3), length=st.integers(2, 7),
    decode_steps=st.integers(0, 3), seed=st.integers(0, 2**16), data=st.data(),
)
def test_select_batch_of_each_entry_equals_indexing_its_tensors(kind, batch, length, decode_steps, seed, data):
    sinks = 2 if kind == "sinks" else 0
    mixer = _swa(sinks=sinks) if sinks else _mixer(kind)
    entry = _entry_after(mixer, batch, length + sinks, seed, decode_steps, sinks)
    index = torch.tensor(data.draw(st.lists(st.integers(0, batch - 1), min_size=1, max_size=4)))  # repeats: beams
    picked = entry.select_batch(index)
    assert type(picked) is type(entry)
    rows, picked_rows = _per_row(entry), _per_row(picked)
    assert rows.keys() == picked_rows.keys()
    for name, tensor in rows.items():
        assert torch.equal(picked_rows[name], tensor[index]), name
    for old, new in zip(_windows(entry), _windows(picked)):
        assert torch.equal(new.key_index, old.key_index)  # per position, not per row
        assert (new.window, new.length, new.maybe_masked, new.in_ring_order) == (old.window, old.length, old.maybe_masked, old.in_ring_order)
    # The selection shares no storage: writing into the source leaves it as it was.
    kept = [t.clone() for t in picked.tensors()]
    for tensor in entry.tensors():
        if tensor.dtype == torch.bool:
            tensor.fill_(False)
        else:
            tensor.zero_()
    assert all(torch.equal(a, b) for a, b in zip(picked.tensors(), kept))


@pytest.mark.parametrize("kind", ["gla", "swa", "parallel"])
def test_mixer_cache_asks_every_entry(kind):
    """memory_bytes, select_batch and fill_windows of the cache are the entries' own answers; empty layers
    stay empty."""
    mixer = _mixer(kind, layer_idx=1)
    entry = _entry_after(mixer, 3, 3, seed=4)
    cache = L.MixerCache(3)
    cache.update_layer_state(1, entry)
    assert cache.memory_bytes() == sum(t.numel() * t.element_size() for t in entry.tensors())
    index = torch.tensor([2, 0])
    want = entry.select_batch(index)
    cache.select_batch(index)
    assert cache.layer_state(0) is None and cache.layer_state(2) is None
    for got, expected in zip(cache.layer_state(1).tensors(), want.tensors()):
        assert torch.equal(got, expected)
    cache.fill_windows()
    for window in _windows(cache.layer_state(1)):
        assert window.num_entries == window.window  # padded with masked placeholders
    if kind == "gla":
        assert torch.equal(cache.layer_state(1).recurrent, want.recurrent)  # a GLA state needs no filling


@pytest.mark.parametrize("kind", ["gla", "parallel"])
@given(length=st.integers(1, 9), seed=st.integers(0, 2**16))
@settings(max_examples=10)
def test_token_by_token_decoding_with_the_cache_equals_the_full_forward(kind, length, seed):
    """Left padding included; a reorder of the rows mid-way (beam search) continues each row as before."""
    mixer = _mixer(kind)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, length, HIDDEN, generator=gen)
    mask = torch.ones(2, length, dtype=torch.long)
    mask[1, : length // 2] = 0
    whole = mixer(x, mask, L.MixerCache(1))
    cache, steps, swap, middle = L.MixerCache(1), [], torch.tensor([1, 0]), length // 2
    for t in range(length):
        if t == middle:
            cache.select_batch(swap)  # from here on the rows run in swapped places
        rows = swap if t >= middle else torch.arange(2)
        out = mixer(x[rows, t : t + 1], mask[rows, t : t + 1], cache)
        steps.append(out[rows])  # back in the original order (the swap is its own inverse)
    keep = mask.bool()
    torch.testing.assert_close(torch.cat(steps, dim=1)[keep], whole[keep], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", ["gla", "parallel"])
def test_a_call_replaces_its_entry_and_leaves_the_saved_one_as_it_was(kind):
    """GLA states and parallel pairs are never changed by their layer (a saved entry replays the call:
    gradient checkpointing), and a replay from the saved entry gives the same output and entry."""
    mixer = _mixer(kind)
    x = torch.randn(2, 5, HIDDEN)
    _, saved = mixer_with_state(mixer, x[:, :3])
    before = [t.clone() for t in saved.tensors()]
    with torch.no_grad():
        first, new = mixer_with_state(mixer, x[:, 3:], state=saved)
    gla_before = saved if kind == "gla" else saved.linear
    gla_after = new if kind == "gla" else new.linear
    assert new is not saved and gla_after is not gla_before
    assert torch.equal(gla_before.recurrent, before[0])  # the saved GLA state was only read
    if kind == "gla":
        again, _ = mixer_with_state(mixer, x[:, 3:], state=saved)
        torch.testing.assert_close(again, first, rtol=0, atol=0)


class RunningMean(torch.nn.Module):
    """A mixer of someone else's: the output at t is ``proj(mean of x_0..x_t)`` per row (padded tokens
    skipped), its state a :class:`RunningSum`. It follows the mixer protocol without subclassing anything."""

    def __init__(self, hidden_size: int, layer_idx: int = 0) -> None:
        super().__init__()
        self.hidden_size, self.layer_idx = hidden_size, layer_idx
        self.proj = torch.nn.Linear(hidden_size, hidden_size)

    def forward(self, hidden_states, attention_mask=None, cache=None):
        return mix_on_cache(self, hidden_states, attention_mask, cache)

    def _mix(self, hidden_states, attention_mask, state):
        keep = torch.ones_like(hidden_states[..., 0]) if attention_mask is None else attention_mask.to(hidden_states.dtype)
        total = (hidden_states * keep[..., None]).cumsum(1)
        count = keep.cumsum(1)
        if state is not None:
            total, count = total + state.total[:, None], count + state.count[:, None]
        out = self.proj(total / count.clamp_min(1)[..., None])
        return out, RunningSum(total[:, -1], count[:, -1])


class RunningSum:
    """Its cache entry: the sum of the real tokens ``[B, D]`` and their number ``[B]`` (CacheEntry only)."""

    def __init__(self, total: torch.Tensor, count: torch.Tensor) -> None:
        self.total, self.count = total, count

    def tensors(self):
        yield from (self.total, self.count)

    def select_batch(self, index):
        return RunningSum(self.total.index_select(0, index), self.count.index_select(0, index))

    def fill_windows(self):
        pass


@torch.no_grad()
def test_a_mixer_with_its_own_entry_works_in_hybrid_blocks_and_the_cache():
    torch.manual_seed(3)
    blocks = [
        L.HybridBlock(HIDDEN, RunningMean(HIDDEN, layer_idx=0), L.GLUMLP(HIDDEN, 24)),
        L.HybridBlock(HIDDEN, _gla(layer_idx=1), L.GLUMLP(HIDDEN, 24)),
    ]

    def stack(x, mask, cache):
        for block in blocks:
            x = block(x, mask, cache)
        return x

    x = torch.randn(3, 9, HIDDEN)
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[2, :4] = 0
    whole = stack(x, mask, L.MixerCache(2))
    cache = L.MixerCache(2)
    pieces = [stack(x[:, a:b], mask[:, a:b], cache) for a, b in ((0, 4), (4, 5), (5, 9))]
    torch.testing.assert_close(torch.cat(pieces, 1)[mask.bool()], whole[mask.bool()], rtol=1e-10, atol=1e-10)
    own = cache.layer_state(0)
    assert isinstance(own, RunningSum) and torch.equal(own.count, mask.sum(1).to(own.count.dtype))
    assert cache.memory_bytes() == sum(t.numel() * t.element_size() for layer in (0, 1) for t in cache.layer_state(layer).tensors())
    cache.fill_windows()
    # Continuing after a reorder equals continuing the reordered rows.
    nxt = torch.randn(3, 2, HIDDEN)
    reordered = copy.deepcopy(cache)
    reordered.select_batch(torch.tensor([2, 0, 1]))
    torch.testing.assert_close(stack(nxt[[2, 0, 1]], None, reordered), stack(nxt, None, cache)[[2, 0, 1]], rtol=1e-10, atol=1e-10)
    assert not is_capturable(own)  # a CacheEntry need not support captured decode steps


@pytest.mark.parametrize("entry", ["gla", "swa", "parallel"])
def test_capture_methods_hold_the_given_storage_and_count_steps(entry):
    state = _entry_after(_mixer(entry), 2, 6, seed=5)
    state.fill_windows()
    assert is_capturable(state)
    tensors = state.step_tensors()
    copies = tuple(t.clone() for t in tensors)
    state.use_step_tensors(copies)
    assert all(a is b for a, b in zip(state.step_tensors(), copies))
    windows = _windows(state)
    lengths = [w.length for w in windows]
    state.count_decode_steps(3)
    assert [w.length for w in windows] == [n + 3 for n in lengths] and all(w.in_ring_order for w in windows)
    state.count_decode_steps(-3)
    assert [w.length for w in windows] == lengths
    wrong = (copies[0][:1],) + copies[1:]
    with pytest.raises(ValueError, match=names("tensors[0]")):
        state.use_step_tensors(wrong)
    with pytest.raises(ValueError, match="tensors must hold"):
        state.use_step_tensors(copies[:-1] if len(copies) > 1 else ())


def test_a_ring_write_counts_as_count_decode_steps_says():
    """count_decode_steps(1) advances the host-side values exactly as an eager decode step does."""
    swa = _swa()
    replayed = _entry_after(swa, 2, 6, seed=6)
    eager = copy.deepcopy(replayed)
    cache = L.MixerCache(1)
    cache.update_layer_state(0, eager)
    with torch.no_grad():
        swa(torch.randn(2, 1, HIDDEN), None, cache)
    replayed.count_decode_steps(1)
    assert (replayed.length, replayed.in_ring_order) == (eager.length, eager.in_ring_order)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: L.MixerCache(2).update_layer_state(0, torch.zeros(1, 2, 3, 3)), "state"),
        (lambda: L.MixerCache(2).update_layer_state(0, (None, None)), "state"),
        (lambda: L.MixerCache(2).update_layer_state(2, None), "layer_idx"),
        (lambda: L.MixerCache(2).layer_state((0, 1)), "layer_idx"),
        (lambda: L.MixerCache(2).select_batch(torch.tensor([0.0])), "index"),
        (lambda: L.MixerCache(2).select_batch(torch.tensor([[0]])), "index"),
        (lambda: L.GLAState(torch.zeros(2, 3, 3)), "recurrent"),
        (lambda: L.GLAState(torch.zeros(1, 2, 3, 3, dtype=torch.int64)), "recurrent"),
        (lambda: L.GLAState(torch.zeros(1, 2, 3, 3)).select_batch([0]), "index"),
        (lambda: L.GLAState(torch.zeros(1, 2, 3, 3)).count_decode_steps(1.0), "steps"),
        (lambda: L.RollingKVCache(4).select_batch(torch.tensor([0.5])), "index"),
        (lambda: L.RollingKVCache(4).step_tensors(), "no token"),
        (lambda: L.RollingKVCache(None).step_tensors(), "bounded sliding windows"),
        (lambda: L.RollingKVCache(4).count_decode_steps(-1), "steps"),
        (lambda: L.ParallelState(linear=torch.zeros(1, 2, 3, 3)), "linear"),
        (lambda: L.ParallelState(softmax=L.GLAState(torch.zeros(1, 2, 3, 3))), "softmax"),
        (lambda: L.ParallelState().step_tensors(), "not run"),
        (lambda: L.ParallelState().select_batch(torch.tensor([[0]])), "index"),
        (lambda: check_entry(object(), "entry"), "entry"),
    ],
)
def test_bad_input_names_the_argument(call, match):
    with pytest.raises((ValueError, TypeError), match=names(match) if " " not in match else match):
        call()


@pytest.mark.parametrize("kind", ["gla", "swa", "parallel"])
def test_an_entry_of_another_layer_kind_is_refused(kind):
    """Each mixer checks its own entry's type (the cache does not): a GLA state in a window's place is a
    TypeError naming the layer."""
    other = {"gla": _swa, "swa": _gla, "parallel": _gla}[kind]()
    foreign = _entry_after(other, 1, 3, seed=7)
    with pytest.raises(TypeError, match="cache entry of .*layer 0 must be"):
        mixer_with_state(_mixer(kind), torch.randn(1, 2, HIDDEN), state=foreign)
