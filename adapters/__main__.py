"""``python -m sb_adapters ...``: an alias of the ``spikingbrain`` command (same parser, same
subcommands; :mod:`spikingbrain.cli`, and :mod:`sb_adapters.cli` for ``report`` / ``sweep-k``)."""

import sys

from .cli import main

sys.exit(main())
