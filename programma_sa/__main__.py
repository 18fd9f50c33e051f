"""``python -m programma_sa``: the ``programma-sa`` command line."""

import sys

from .cli import main

sys.exit(main())
