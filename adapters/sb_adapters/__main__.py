"""``python -m sb_adapters ...``: an alias of the ``spikingbrain`` command (same parser, same
subcommands: :mod:`spikingbrain.cli`; ``report`` / ``sweep-k`` live in :mod:`spikingbrain.inject` and :mod:`spikingbrain.inject_run`).

The one import from the command-line package above sb_adapters, and only here: this module runs as a
script and nothing imports it, so the library keeps the dependency direction of docs/architecture.md
(sb_adapters never imports spikingbrain; the command line imports sb_adapters' public modules).
"""

import sys

from spikingbrain.cli import main

sys.exit(main())
