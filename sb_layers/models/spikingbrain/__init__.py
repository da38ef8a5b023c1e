"""SpikingBrain-7B and a 76B-style variant assembled from sb_layers parts, as transformers models.

:mod:`.cost_model` is the theoretical cost of such a model against a dense Transformer of the same shape
(``spikingbrain estimate``); its main names are exported here.

Importing this package registers the model types ``"spikingbrain"`` and the release's ``"gla_swa"`` with
``AutoConfig`` and ``AutoModelForCausalLM``, so released checkpoints load without remote code.
"""

from transformers import AutoConfig, AutoModelForCausalLM

from .cache import SpikingBrainCache
from .configuration import GLASwaConfig, SpikingBrainConfig
from .cost_model import Estimate, ModelShape, cost_ratio, estimate
from .cost_runs import RunComparison, compare_run, load_run
from .layout import adapt_config_to_checkpoint, checkpoint_shapes, save_released_checkpoint
from .convert import continual_pretrain, convert_qwen2
from .graphed_decode import GraphedDecoder
from .sequence_parallel import sequence_parallel_prefill, shard_bounds
from .modeling import GLASwaForCausalLM, SpikingBrainForCausalLM, SpikingBrainModel, SpikingBrainPreTrainedModel
from sb_layers.report import SpikingReport, spiking_layers

from .w8aspike import pack_int8, plot_spike_report, repack_per_channel, resident_bytes, to_w8aspike

for _model_class in (SpikingBrainForCausalLM, GLASwaForCausalLM):
    AutoConfig.register(_model_class.config_class.model_type, _model_class.config_class, exist_ok=True)
    AutoModelForCausalLM.register(_model_class.config_class, _model_class, exist_ok=True)

__all__ = [
    "GLASwaConfig",
    "GLASwaForCausalLM",
    "Estimate",
    "GraphedDecoder",
    "ModelShape",
    "RunComparison",
    "SpikingBrainCache",
    "SpikingBrainConfig",
    "SpikingBrainForCausalLM",
    "SpikingBrainModel",
    "SpikingBrainPreTrainedModel",
    "SpikingReport",
    "adapt_config_to_checkpoint",
    "checkpoint_shapes",
    "compare_run",
    "continual_pretrain",
    "convert_qwen2",
    "cost_ratio",
    "estimate",
    "load_run",
    "pack_int8",
    "plot_spike_report",
    "repack_per_channel",
    "resident_bytes",
    "save_released_checkpoint",
    "sequence_parallel_prefill",
    "shard_bounds",
    "spiking_layers",
    "to_w8aspike",
]
