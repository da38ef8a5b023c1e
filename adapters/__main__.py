"""``python -m sb_adapters report | sweep-k``: see :mod:`sb_adapters.cli`."""

import sys

from .cli import main

sys.exit(main())
