"""The plugin's hook into vLLM's engine set-up: what the SpikingBrain model needs of vLLM's configuration.

vLLM runs ``MODELS_CONFIG_MAP[architecture].verify_and_update_config(vllm_config)`` while it builds the
engine's config, before its hybrid-model defaults; :func:`sb_adapters.vllm.register` maps our two
architectures to :class:`SpikingBrainEngineConfig`.
"""

from __future__ import annotations

from vllm.config import VllmConfig
from vllm.logger import init_logger
from vllm.model_executor.models.config import VerifyAndUpdateConfig

logger = init_logger(__name__)


class SpikingBrainEngineConfig(VerifyAndUpdateConfig):
    """Turns prefix caching off: the GLA layers keep one state per request (the state after its last
    token), not one per cached block, so a request cannot start from another's cached prefix."""

    @staticmethod
    def verify_and_update_config(vllm_config: VllmConfig) -> None:
        cache_config = vllm_config.cache_config
        if cache_config.enable_prefix_caching:
            logger.warning("SpikingBrain: prefix caching is not supported (GLA states are per request); turning it off")
            cache_config.enable_prefix_caching = False
