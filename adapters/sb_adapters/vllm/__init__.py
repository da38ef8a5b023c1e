"""SpikingBrain on vLLM (V1 engine): a general plugin that serves the released ``GLAswaForCausalLM`` and our
``SpikingBrainForCausalLM`` checkpoints with vLLM's hybrid (linear attention + attention) machinery.

vLLM loads the plugin through the entry point ``vllm.general_plugins`` (``spikingbrain =
sb_adapters.vllm.register:register``) in every process it starts. Importing this package imports no vLLM:
the model modules (``model``, ``mixer``, ``weights``, ``servable``) import it and are loaded by vLLM's model
registry only when a SpikingBrain checkpoint is served. See docs/serve-vllm.md.

Modules: ``register`` (the entry point), ``engine_config`` (prefix caching off), ``servable`` (which checkpoints the plugin can serve, checked at
load), ``mixer`` (the GLA layer on vLLM's linear-attention state), ``model`` (the decoder stack and the
causal LM), ``weights`` (loading the released layout and ours).
"""

from .register import ARCHITECTURES, register

__all__ = ["ARCHITECTURES", "register"]
