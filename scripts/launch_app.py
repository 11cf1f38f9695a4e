#!/usr/bin/env python
"""Browse NIGHTS in the FiftyOne App: the same as `nights app ...` (see --help)."""

import sys

from nights.cli import main

if __name__ == "__main__":
    sys.exit(main(["app", *sys.argv[1:]]))
