"""``python -m streamkit.cli``: the ``streamkit`` command."""

import sys

from . import main

sys.exit(main())
