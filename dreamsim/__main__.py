"""``python -m dreamsim download VARIANT [--cache-dir DIR]``: fetch a variant's official zip."""

from __future__ import annotations

import argparse
import sys

from .errors import DreamSimError
from .variants import VARIANTS
from .weights import checkpoint_folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dreamsim", description="Download DreamSim's released weights."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    download = commands.add_parser("download", help="fetch and extract a variant's zip")
    download.add_argument("variant", choices=list(VARIANTS))
    download.add_argument(
        "--cache-dir",
        default=None,
        help="destination (default: $DREAMSIM_HOME or ~/.cache/dreamsim)",
    )
    args = parser.parse_args(argv)
    try:
        folder = checkpoint_folder(VARIANTS[args.variant], args.cache_dir, download=True)
    except DreamSimError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{args.variant}: ready in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
