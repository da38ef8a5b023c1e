"""GraphedDecoder: one-token decode steps of SpikingBrain replayed from a captured CUDA graph.

A batch-B decode step of the 7B layout launches about 500 kernels, most of them small; eager PyTorch
spends several times longer launching them than the GPU spends running them. Every tensor such a step reads or writes has a fixed
shape once the sliding windows are full (:meth:`SpikingBrainCache.fill_windows`), so the whole step can
be captured once and replayed per token (the figures: ``docs/performance.md``).

The decoder owns the cache from construction on: the tensors its entries name as a step's
(:meth:`sb_layers.mixer_cache.CapturableEntry.step_tensors`) become the graph's static buffers. Each step
reads them, computes the next state and writes it back into the same storage, so the cache stays a valid
:class:`SpikingBrainCache` (readable, e.g. ``memory_bytes``) but must not be advanced by an eager call
while the decoder uses it (detected: :meth:`GraphedDecoder.step` raises). The decoder asks the entries,
never their types: any entry following :class:`sb_layers.mixer_cache.CapturableEntry` can be captured.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch

from sb_layers.mixer_cache import is_capturable
from sb_neurons.validation import check_int, describe

from .cache import SpikingBrainCache


class GraphedDecoder:
    """Greedy or caller-driven one-token decode steps of a :class:`SpikingBrainForCausalLM` over a cache.

    Args:
        model: a :class:`SpikingBrainForCausalLM` in eval mode whose cache entries keep fixed shapes: GLA
            states, bounded sliding windows and their intra-layer pairs (the 7B layout, bf16 or W8ASpike, is
            the one measured); full-attention layers (a window that grows) and attention sinks are refused.
        cache: the :class:`SpikingBrainCache` after the prompt (``seen_tokens >= 1``) on ``model``'s
            device. Its windows are filled (same outputs, fixed shapes) and its tensors become static.
        input_ids: ``[B, 1]`` int64, the next token of every row (usually the prompt's greedy token).
        use_cuda_graph: capture the step as a CUDA graph (needs a CUDA model). False runs the very same
            step eagerly, buffers and all: for CPU models and for checking the graph against it.
        warmup: eager steps run before the capture, on a side stream (Triton kernels compile and
            autotune outside the capture); the cache is restored afterwards, so they leave no trace.

    Each :meth:`step` feeds ``[B, 1]`` tokens (by default the previous step's greedy choice) and returns
    the logits ``[B, 1, vocab]`` in the model's dtype. The logits and :attr:`next_tokens` are static
    buffers overwritten by the next step: clone what you keep. Identity: the logits of every step equal
    those of ``model(tokens, cache=cache)`` on a copy of the cache, up to the floating-point
    order of the ring-buffer window (bit-equal on CUDA for the 7B layout's kernels).
    """

    def __init__(
        self, model: torch.nn.Module, cache: SpikingBrainCache, input_ids: torch.Tensor, *,
        use_cuda_graph: bool = True, warmup: int = 2,
    ) -> None:
        if not isinstance(cache, SpikingBrainCache):
            raise TypeError(f"cache must be a SpikingBrainCache, got {type(cache).__name__}")
        if cache.seen_tokens < 1 or cache.real_tokens is None:
            raise ValueError("cache must hold a prompt (run the model on it with use_cache=True first)")
        if len(cache) != model.config.num_hidden_layers:
            raise ValueError(f"cache has {len(cache)} layers, the model {model.config.num_hidden_layers}")
        batch = int(cache.real_tokens.shape[0])
        _check_tokens(input_ids, (batch, 1))
        check_int(warmup, "warmup", minimum=0)
        if model.training:
            raise ValueError("model must be in eval mode (model.eval()): dropout and autograd cannot be captured")
        device = cache.real_tokens.device
        if input_ids.device != device or next(model.parameters()).device != device:
            raise ValueError(f"model, cache and input_ids must share one device; the cache is on {device}")
        if use_cuda_graph and device.type != "cuda":
            raise ValueError(f"use_cuda_graph=True needs a CUDA model and cache, got device {device}")
        _check_layer_states(cache)

        self.model, self.cache, self.use_cuda_graph = model, cache, use_cuda_graph
        cache.fill_windows()
        # One static storage per tensor a step reads: the cache's own tensors after the prompt.
        self._real_tokens = cache.real_tokens
        self._buffers = [entry.step_tensors() for entry in cache.states]
        self.next_tokens = input_ids.detach().clone()
        self.logits: torch.Tensor | None = None
        self._graph: torch.cuda.CUDAGraph | None = None

        snapshot = [buffer.clone() for buffer in self._all_buffers()]
        seen = cache.seen_tokens
        stream = torch.cuda.Stream(device) if use_cuda_graph else None
        if stream is not None:
            stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream) if stream is not None else nullcontext(), torch.inference_mode():
            for _ in range(warmup):
                self._decode_once()
            for buffer, saved in zip(self._all_buffers(), snapshot):
                buffer.copy_(saved)
            self.next_tokens.copy_(input_ids)
            if stream is not None:
                self._graph = torch.cuda.CUDAGraph()
                # Captured on the warm-up stream: per-stream state the kernels set up while warming up
                # (the W8ASpike split-K arrival counters) is then already in place.
                with torch.cuda.graph(self._graph, stream=stream):
                    self.logits = self._decode_once()
        if stream is not None:
            torch.cuda.current_stream(device).wait_stream(stream)
        # The warm-up's tensor effects were undone and a capture computes nothing, but the Python of those
        # steps advanced the host-side counters: take them back.
        python_steps = warmup + (stream is not None)
        cache.seen_tokens = seen
        for entry in cache.states:
            entry.count_decode_steps(-python_steps)
        self._expected_seen = cache.seen_tokens

    @classmethod
    def from_prompt(
        cls, model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **options: Any
    ) -> GraphedDecoder:
        """Run the prompt ``input_ids [B, L]`` (left padding marked by ``attention_mask``) through ``model``
        into a new :class:`SpikingBrainCache` and return the decoder that continues it greedily: its first
        :meth:`generate` token is the prompt's argmax. ``options`` go to the constructor."""
        if not isinstance(input_ids, torch.Tensor) or input_ids.dtype != torch.int64 or input_ids.ndim != 2 or not input_ids.numel():
            raise ValueError(f"input_ids must be a non-empty int64 tensor of shape (B, L), got {describe(input_ids)}")
        cache = SpikingBrainCache(model.config.num_hidden_layers)
        with torch.inference_mode():
            logits = model(input_ids, attention_mask=attention_mask, cache=cache, use_cache=True, logits_to_keep=1).logits
        return cls(model, cache, logits[:, -1:].argmax(-1), **options)

    @property
    def tokens_seen(self) -> int:
        """Sequence positions the cache holds (prompt, padding included, plus decoded steps)."""
        return self.cache.seen_tokens

    def step(self, input_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Decode one position; returns the static logits ``[B, 1, vocab]`` of this step.

        Args:
            input_ids: ``[B, 1]`` int64 tokens to feed, or None for :attr:`next_tokens` (the greedy choice
                of the previous step, or the ``input_ids`` given at construction before the first step).
        """
        if self.cache.seen_tokens != self._expected_seen:
            raise RuntimeError(
                "the cache was advanced outside this GraphedDecoder (an eager model call on it): its static "
                "buffers no longer hold the state; build a new GraphedDecoder from the cache"
            )
        if input_ids is not None:
            _check_tokens(input_ids, tuple(self.next_tokens.shape))
            self.next_tokens.copy_(input_ids)
        if self._graph is not None:
            self._graph.replay()
            # The replay repeated the step's kernels only: its Python-side counting is done here.
            self.cache.seen_tokens += 1
            for entry in self.cache.states:
                entry.count_decode_steps(1)
        else:
            with torch.inference_mode():
                self.logits = self._decode_once()
        self._expected_seen = self.cache.seen_tokens
        return self.logits

    def generate(self, max_new_tokens: int) -> torch.Tensor:
        """Greedy decoding of ``max_new_tokens`` steps: ``[B, max_new_tokens]`` int64, starting with the
        token fed first (no end-of-sequence stop: stopping would read the device every step)."""
        check_int(max_new_tokens, "max_new_tokens", minimum=1)
        out = torch.empty(self.next_tokens.shape[0], max_new_tokens, dtype=torch.int64, device=self.next_tokens.device)
        for index in range(max_new_tokens):
            out[:, index : index + 1].copy_(self.next_tokens)
            if index + 1 < max_new_tokens:
                self.step()
        return out

    # --- internals --------------------------------------------------------------------------------------

    def _all_buffers(self) -> list[torch.Tensor]:
        return [self._real_tokens] + [buffer for buffers in self._buffers for buffer in buffers]

    def _decode_once(self) -> torch.Tensor:
        """One eager step that leaves the state in the static buffers and the greedy token in next_tokens."""
        logits = self.model(self.next_tokens, cache=self.cache, use_cache=True).logits
        # A step may return new tensors (a GLA layer a new GLAState, the row counts new tensors) or write
        # in place (a window's ring): either way the results go back into the storage the graph reads.
        if self.cache.real_tokens is not self._real_tokens:
            self._real_tokens.copy_(self.cache.real_tokens)
            self.cache.real_tokens = self._real_tokens
        for entry, buffers in zip(self.cache.states, self._buffers):
            current = entry.step_tensors()
            moved = [(buffer, tensor) for buffer, tensor in zip(buffers, current) if tensor is not buffer]
            if moved:
                for buffer, tensor in moved:
                    buffer.copy_(tensor)
                entry.use_step_tensors(buffers)
        self.next_tokens.copy_(logits[:, -1:].argmax(-1))
        return logits


def _check_tokens(input_ids: object, shape: tuple[int, int]) -> None:
    if not isinstance(input_ids, torch.Tensor) or input_ids.dtype != torch.int64 or tuple(input_ids.shape) != shape:
        raise ValueError(f"input_ids must be an int64 tensor of shape {shape}, got {describe(input_ids)}")


def _check_layer_states(cache: SpikingBrainCache) -> None:
    """Every entry can be captured (it follows CapturableEntry and its step shapes can be fixed), checked
    before anything in the cache changes."""
    for index, entry in enumerate(cache.states):
        if entry is None:
            raise TypeError(f"layer {index}: the cache holds no entry for it (the layer has not run)")
        if not is_capturable(entry):
            raise TypeError(
                f"layer {index}: its cache entry, a {type(entry).__name__}, does not support captured decode steps "
                "(sb_layers.mixer_cache.CapturableEntry: step_tensors, use_step_tensors, count_decode_steps)"
            )
        try:
            entry.step_tensors()
        except ValueError as error:
            raise TypeError(f"layer {index}: GraphedDecoder needs a cache whose step shapes stay fixed: {error}") from None


__all__ = ["GraphedDecoder"]
