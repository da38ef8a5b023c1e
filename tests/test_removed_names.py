"""The compatibility layer is gone (CHANGELOG.md): no old name answers any more, the current ones do, and
the one deprecation helper left names the version that removes what it warns about."""

import importlib

import pytest

import sb_kernels
import sb_layers
from sb_layers.models.spikingbrain import cost_model, cost_runs, cost_tables
from sb_neurons.deprecation import warn_deprecated

# (module, removed name, the current object)
REMOVED = [
    ("sb_layers", "gla_recurrent", lambda: sb_kernels.gla_recurrent),
    ("sb_layers", "gla_chunked", lambda: sb_kernels.gla_chunked),
    ("sb_layers", "gla_event_driven", lambda: sb_kernels.gla_event_driven),
    ("sb_layers", "gla_fla", lambda: sb_kernels.gla_fla),
    ("sb_layers", "resolve_backend", lambda: sb_layers.resolve_linear_backend),
    ("sb_layers", "run_mixer", lambda: sb_layers.MixerCache),
    ("sb_layers.spiking_linear", "resolve_backend", lambda: sb_layers.resolve_linear_backend),
    ("sb_layers.sliding_window", "quantize_int8_per_vector", lambda: sb_kernels.int8_fake_quantize),
    ("sb_kernels", "spike_quantize", lambda: sb_kernels.spike_count_rows),
    ("sb_kernels", "spike_quantize_reference", lambda: sb_kernels.spike_count_rows_reference),
    ("sb_kernels.spike_quant", "spike_quantize", lambda: sb_kernels.spike_count_rows),
    ("sb_kernels.spike_quant", "spike_quantize_reference", lambda: sb_kernels.spike_count_rows_reference),
    ("sb_layers.models.spikingbrain", "GLAswaForCausalLM", lambda: importlib.import_module("sb_layers.models.spikingbrain").GLASwaForCausalLM),
    ("sb_layers.models.spikingbrain", "SpikeReport", lambda: sb_layers.SpikingReport),
    ("sb_layers.models.spikingbrain.modeling", "GLAswaForCausalLM",
     lambda: importlib.import_module("sb_layers.models.spikingbrain").GLASwaForCausalLM),
    ("sb_layers.models.spikingbrain.w8aspike", "SpikeReport", lambda: sb_layers.SpikingReport),
    ("sb_layers.models.spikingbrain.w8aspike", "spiking_linears", lambda: sb_layers.spiking_layers),
    ("sb_layers.models.spikingbrain.cache", "_tensors_of", lambda: sb_layers.mixer_cache.CacheEntry.tensors),
    ("sb_layers.models.spikingbrain.cache", "_select_batch", lambda: sb_layers.MixerCache.select_batch),
    # The entries answer for themselves (issue "One shape, second step", item 2): no type switches in the cache.
    ("sb_layers.mixer_cache", "tensors_of", lambda: sb_layers.mixer_cache.CacheEntry.tensors),
    ("sb_layers.mixer_cache", "select_batch", lambda: sb_layers.MixerCache.select_batch),
    ("sb_layers.mixer_cache", "fill_windows", lambda: sb_layers.MixerCache.fill_windows),
    ("sb_layers.mixer_cache", "cache_key", lambda: sb_layers.mixer_cache.mix_on_cache),  # the entry is at the mixer's layer_idx
    ("sb_layers.mixer_cache", "LayerKey", lambda: sb_layers.MixerCache.layer_state),
]
COST_MODEL_NAMES = [
    "DEFAULT_CONTEXTS", "PHASES", "RUN_MODELS", "Estimate", "ModelShape", "RunComparison", "active_from_sparsity",
    "attended_fraction", "attention_share", "compare_run", "cost_ratio", "estimate", "expert_fraction",
    "format_comparison", "format_context", "format_estimates", "full_pairs", "linear_attention_pairs", "load_run",
    "shape_from_run", "sparsity_from_stats", "speedup", "validate_run", "window_pairs",
]
COST_MODULES = (cost_model, cost_runs, cost_tables)  # the arithmetic, a measured run, the tables


def _in_cost_modules(name):
    """The object ``name`` of whichever cost-model module holds it (exactly one does)."""
    (found,) = [getattr(module, name) for module in COST_MODULES if name in module.__all__]
    return found


REMOVED += [("spikingbrain.estimate", name, lambda name=name: _in_cost_modules(name)) for name in COST_MODEL_NAMES]
REMOVED_MODULES = ["sb_kernels.gla_decode", "sb_layers._deprecation", "sb_layers.flat_coding"]


@pytest.mark.parametrize("module, old, current", REMOVED, ids=[f"{m}.{o}" for m, o, _ in REMOVED])
def test_old_name_is_gone_and_the_current_one_is_there(module, old, current):
    mod = importlib.import_module(module)
    with pytest.raises(AttributeError, match=old):
        getattr(mod, old)
    assert current() is not None
    assert old not in getattr(mod, "__all__", ())


@pytest.mark.parametrize("module", REMOVED_MODULES)
def test_old_modules_are_gone(module):
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(module)


def test_the_cost_model_lives_in_its_modules_and_the_cli_module_keeps_its_names():
    assert set().union(*(module.__all__ for module in COST_MODULES)) >= set(COST_MODEL_NAMES)
    from spikingbrain.estimate import ESTIMATE_DESCRIPTION, ESTIMATE_HELP, add_estimate_parser, run_estimate_command  # noqa: F401


def test_gla_decode_lives_in_sb_kernels_gla_decode():
    from sb_kernels.gla import decode

    assert decode.gla_decode_step is sb_kernels.gla_decode_step
    assert decode.gla_decode_step_reference is sb_kernels.gla_decode_step_reference


def test_warn_deprecated_names_the_removal_version():
    with pytest.warns(DeprecationWarning, match=r"^sb_layers\.old is deprecated and will be removed in 0\.3\.0; use sb_layers\.new$"):
        warn_deprecated("sb_layers.old", "sb_layers.new", removed_in="0.3.0")


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(old="a", new="b", removed_in="next"), ValueError, "removed_in"),
    (dict(old="a", new="b", removed_in=3), TypeError, "removed_in"),
    (dict(old="", new="b", removed_in="0.3"), ValueError, "old"),
    (dict(old="a", new=None, removed_in="0.3"), TypeError, "new"),
    (dict(old="a", new="b", removed_in="0.3", stacklevel=0), ValueError, "stacklevel"),
    (dict(old="a", new="b", removed_in="0.3", stacklevel=1.5), TypeError, "stacklevel"),
])
def test_warn_deprecated_checks_its_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        warn_deprecated(**kwargs)
