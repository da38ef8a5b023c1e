"""Names renamed or moved by issue 23 stay importable for one release under their old name: each use
warns with a DeprecationWarning naming the new one, and gives the same object."""

import importlib

import pytest

import sb_kernels
import sb_layers
from sb_layers.models.spikingbrain import cost_model

# (module, old name, new name as the warning spells it, the object the new name gives)
ALIASES = [
    ("sb_layers", "gla_recurrent", "sb_kernels.gla_recurrent", lambda: sb_kernels.gla_recurrent),
    ("sb_layers", "gla_chunked", "sb_kernels.gla_chunked", lambda: sb_kernels.gla_chunked),
    ("sb_layers", "gla_event_driven", "sb_kernels.gla_event_driven", lambda: sb_kernels.gla_event_driven),
    ("sb_layers", "gla_fla", "sb_kernels.gla_fla", lambda: sb_kernels.gla_fla),
    ("sb_layers", "resolve_backend", "sb_layers.resolve_linear_backend", lambda: sb_layers.resolve_linear_backend),
    ("sb_layers.spiking_linear", "resolve_backend", "sb_layers.resolve_linear_backend", lambda: sb_layers.resolve_linear_backend),
    ("sb_kernels.gla_decode", "gla_decode_step", "sb_kernels.gla.decode.gla_decode_step", lambda: sb_kernels.gla_decode_step),
    ("sb_kernels.gla_decode", "gla_decode_step_reference", "sb_kernels.gla.decode.gla_decode_step_reference",
     lambda: sb_kernels.gla_decode_step_reference),
    ("sb_kernels", "spike_quantize", "sb_kernels.spike_count_rows", lambda: sb_kernels.spike_count_rows),
    ("sb_kernels", "spike_quantize_reference", "sb_kernels.spike_count_rows_reference",
     lambda: sb_kernels.spike_count_rows_reference),
    ("sb_kernels.spike_quant", "spike_quantize", "sb_kernels.spike_count_rows", lambda: sb_kernels.spike_count_rows),
    ("sb_kernels.spike_quant", "spike_quantize_reference", "sb_kernels.spike_count_rows_reference",
     lambda: sb_kernels.spike_count_rows_reference),
    ("sb_layers.sliding_window", "quantize_int8_per_vector", "sb_kernels.int8_fake_quantize", lambda: sb_kernels.int8_fake_quantize),
]
# issue 23 (5): the cost model moved from the CLI module spikingbrain.estimate to sb_layers.models.spikingbrain.cost_model
COST_MODEL_NAMES = [
    "DEFAULT_CONTEXTS", "PHASES", "RUN_MODELS", "Estimate", "ModelShape", "RunComparison", "active_from_sparsity",
    "attended_fraction", "attention_share", "compare_run", "cost_ratio", "estimate", "expert_fraction",
    "format_comparison", "format_context", "format_estimates", "full_pairs", "linear_attention_pairs", "load_run",
    "shape_from_run", "sparsity_from_stats", "speedup", "validate_run", "window_pairs",
]
ALIASES += [
    ("spikingbrain.estimate", name, f"sb_layers.models.spikingbrain.cost_model.{name}", lambda name=name: getattr(cost_model, name))
    for name in COST_MODEL_NAMES
]


@pytest.mark.parametrize("module, old, new, current", ALIASES, ids=[f"{m}.{o}" for m, o, _, _ in ALIASES])
def test_old_name_warns_naming_the_new_one_and_is_the_same_object(module, old, new, current):
    mod = importlib.import_module(module)
    with pytest.warns(DeprecationWarning, match=new.replace(".", r"\.")):
        value = getattr(mod, old)
    assert value is current()
    assert old not in getattr(mod, "__all__", ())  # deprecated names are not exported


def test_from_import_of_an_old_name_warns():
    with pytest.warns(DeprecationWarning, match="sb_kernels.gla_recurrent"):
        from sb_layers import gla_recurrent
    assert gla_recurrent is sb_kernels.gla_recurrent


def test_the_old_cost_model_import_path_warns_and_the_cli_names_do_not():
    import warnings

    with pytest.warns(DeprecationWarning, match=r"sb_layers\.models\.spikingbrain\.cost_model\.ModelShape"):
        from spikingbrain.estimate import ModelShape
    assert ModelShape is cost_model.ModelShape
    assert set(cost_model.__all__) >= set(COST_MODEL_NAMES)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from spikingbrain.estimate import ESTIMATE_DESCRIPTION, ESTIMATE_HELP, add_estimate_parser, run_estimate_command  # noqa: F401


@pytest.mark.parametrize("module", ["sb_layers", "sb_kernels", "sb_kernels.gla_decode", "spikingbrain.estimate"])
def test_unknown_names_still_raise_attribute_error(module):
    with pytest.raises(AttributeError, match="no_such_name"):
        getattr(importlib.import_module(module), "no_such_name")
