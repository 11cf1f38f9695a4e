#!/usr/bin/env python
"""Download a NIGHTS release: the same as `nights download ...` (see --help)."""

import sys

from nights.cli import main

if __name__ == "__main__":
    sys.exit(main(["download", *sys.argv[1:]]))
