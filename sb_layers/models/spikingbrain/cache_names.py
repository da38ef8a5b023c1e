"""The name transformers gives the decoding cache, which changed across its 5.x releases.

Earlier 5.x releases (5.17 among them) call it ``past_key_values`` everywhere; later ones (5.24 among them)
call it ``cache`` (the forward keyword, the model outputs' field and ``generate()``'s model kwargs) and still
accept ``past_key_values``, with their own warning; which one is installed is read from transformers itself below.
The SpikingBrain models accept both keywords on every release and write the cache under the name the
installed release reads, so ``generate()`` and user code work on either side of the rename.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

from transformers import GenerationMixin
from transformers.modeling_outputs import BaseModelOutputWithPast

from .cache import SpikingBrainCache

#: Field of transformers' ``*WithPast`` outputs that holds the cache in the installed release.
OUTPUT_CACHE_FIELD = (
    "cache" if "cache" in {f.name for f in dataclasses.fields(BaseModelOutputWithPast)} else "past_key_values"
)
#: Key of ``generate()``'s model kwargs that carries the cache from step to step in the installed release.
GENERATE_CACHE_KEY = (
    "cache" if "cache" in inspect.signature(GenerationMixin.prepare_inputs_for_generation).parameters else "past_key_values"
)
#: Every name a caller may use for the cache.
CACHE_NAMES = ("cache", "past_key_values")


def resolve_cache(cache: Any, past_key_values: Any) -> SpikingBrainCache | None:
    """The one cache given as ``cache`` or as its older name ``past_key_values`` (None if neither).

    Raises ``ValueError`` when both name different objects and ``TypeError`` when the cache is not a
    :class:`SpikingBrainCache`.
    """
    if cache is not None and past_key_values is not None and cache is not past_key_values:
        raise ValueError("give the cache once: cache and past_key_values name different objects")
    chosen = cache if cache is not None else past_key_values
    if chosen is not None and not isinstance(chosen, SpikingBrainCache):
        raise TypeError(f"cache must be a SpikingBrainCache, got {type(chosen).__name__}")
    return chosen


def output_cache(outputs: Any) -> Any:
    """The cache held by a transformers ``*WithPast`` output, read under the installed release's field name."""
    return getattr(outputs, OUTPUT_CACHE_FIELD)
