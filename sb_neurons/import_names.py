"""The repository's folders ``kernels/`` and ``adapters/`` share their names with other distributions.

They install as ``sb_kernels`` and ``sb_adapters`` (``[tool.setuptools.package-dir]``), but whenever the
repository root is on ``sys.path`` (``python -m pytest``, ``python -c`` or a notebook started there), the
folders also answer to ``import kernels`` and ``import adapters``: the import names of HuggingFace's
``kernels`` (which transformers >= 5.25 imports on start-up) and AdapterHub's ``adapters``. Each folder's
``__init__`` therefore checks the name it is imported under, and when that is the foreign one calls
:func:`defer_to_distribution`, which loads the distribution that owns the name from the rest of
``sys.path``, so that ``import kernels`` means the same from the repository root as from anywhere else.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path


def _resolved(entry: str) -> Path:
    return Path(entry or os.getcwd()).resolve()


def defer_to_distribution(name: str, package_file: str, install_name: str) -> None:
    """Replace the module being imported as ``name`` by the distribution that owns ``name``.

    Args:
        name: the top-level import name being resolved (``"kernels"`` or ``"adapters"``).
        package_file: ``__file__`` of the folder's ``__init__.py`` that was found under ``name``.
        install_name: the name the folder installs as (``"sb_kernels"``), for the error message.

    Looks ``name`` up on ``sys.path`` without the directory that holds the folder; when found, executes
    that package into ``sys.modules[name]`` (the import statement returns what ``sys.modules`` holds once
    the ``__init__`` finishes, so the caller's ``__init__`` must execute nothing else afterwards).

    Raises:
        ModuleNotFoundError: no other distribution provides ``name``.
    """
    folder = Path(package_file).resolve().parent
    search_path = [entry for entry in sys.path if _resolved(entry) != folder.parent]
    spec = importlib.machinery.PathFinder.find_spec(name, search_path)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(
            f"No module named {name!r}: {folder} is spikingbrain's {install_name}, found as {name!r} only "
            f"because its parent directory is on sys.path; import it as {install_name}",
            name=name,
        )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
