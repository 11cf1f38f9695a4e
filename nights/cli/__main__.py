"""``python -m nights.cli``: the ``nights`` command."""

import sys

from . import main

sys.exit(main())
