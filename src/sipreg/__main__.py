"""``python -m sipreg``: the ``sipreg`` command."""

import sys

from .cli import main

sys.exit(main())
