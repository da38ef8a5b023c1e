"""Deprecated: the module is :mod:`sb_kernels.gla.decode` (removed in the next release).

``gla_decode_step`` and ``gla_decode_step_reference`` are importable from :mod:`sb_kernels` as before;
reading them from this module warns with a ``DeprecationWarning`` naming the new place.
"""

from sb_neurons.deprecation import module_aliases

from .gla import decode as _decode

__getattr__ = module_aliases(
    "sb_kernels.gla_decode",
    {name: (f"sb_kernels.gla.decode.{name}", lambda name=name: getattr(_decode, name))
     for name in ("gla_decode_step", "gla_decode_step_reference")},
)
