"""``python -m streamkit``: the same command line as ``streamkit``."""

import sys

from .cli import main

sys.exit(main())
