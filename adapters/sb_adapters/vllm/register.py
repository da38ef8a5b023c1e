"""The vLLM entry point: registers SpikingBrain's architectures with vLLM and its config types with AutoConfig.

vLLM calls :func:`register` in each of its processes (engine core, workers, API server) before it reads a
model's config. The model class is registered by its import path (``"module:Class"``), so vLLM imports the
model (and with it vLLM's layers) only when a SpikingBrain checkpoint is served.
"""

from __future__ import annotations

# The released checkpoint names GLAswaForCausalLM in config.json (facts section 4); ours write
# SpikingBrainForCausalLM. Both are served by the same vLLM model.
ARCHITECTURES = ("GLAswaForCausalLM", "SpikingBrainForCausalLM")
MODEL_PATH = "sb_adapters.vllm.model:SpikingBrainForCausalLM"


def register() -> None:
    """Register :data:`ARCHITECTURES` with ``vllm.ModelRegistry`` (lazily, by import path) and with vLLM's
    engine-config hooks (:class:`sb_adapters.vllm.engine_config.SpikingBrainEngineConfig`), and the config
    types ``"spikingbrain"`` and ``"gla_swa"`` with transformers' ``AutoConfig``. Idempotent; takes no
    arguments (vLLM's plugin protocol)."""
    # Importing the model package registers both config types with AutoConfig (and the HF model classes
    # with AutoModelForCausalLM), so vLLM's config reader needs no trust_remote_code.
    import sb_layers.models.spikingbrain  # noqa: F401
    from vllm import ModelRegistry
    from vllm.model_executor.models.config import MODELS_CONFIG_MAP

    from .engine_config import SpikingBrainEngineConfig

    for architecture in ARCHITECTURES:
        if architecture not in ModelRegistry.get_supported_archs():
            ModelRegistry.register_model(architecture, MODEL_PATH)
        # vLLM's engine set-up asks this hook first (prefix caching off: GLA states are per request).
        MODELS_CONFIG_MAP[architecture] = SpikingBrainEngineConfig
