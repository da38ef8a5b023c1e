"""``python -m sb_adapters ...``: an alias of the ``spikingbrain`` command (same parser, same
subcommands; :mod:`spikingbrain.cli`, and :mod:`sb_adapters.cli` for ``report`` / ``sweep-k``).

The one import from the command-line package above sb_adapters, and only here: this module runs as a
script and nothing imports it, so the library keeps the dependency direction of DESIGN.md.
"""

import sys

from spikingbrain.cli import main

sys.exit(main())
