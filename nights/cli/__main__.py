"""``python -m nights.cli``: the ``nights`` command."""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
