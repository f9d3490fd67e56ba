"""``python -m vidflow ...`` is ``vidflow ...``."""

import sys

from .cli import main

sys.exit(main())
