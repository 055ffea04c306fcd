"""``python -m opticam`` = the ``opticam`` command."""

import sys

from .cli import main

sys.exit(main())
