"""sb_layers' own name for :mod:`sb_neurons.deprecation` (private; the helpers live there)."""

from sb_neurons.deprecation import module_aliases, warn_renamed

__all__ = ["module_aliases", "warn_renamed"]
