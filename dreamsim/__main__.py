"""``python -m dreamsim download VARIANT [--cache-dir DIR] [--from-hub]``: fetch a variant's
official zip, or its untuned backbones from the Hugging Face Hub."""

from __future__ import annotations

import argparse
import sys

from .errors import DreamSimError
from .variants import VARIANTS
from .weights import checkpoint_folder, fetch_from_hub


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dreamsim", description="Download DreamSim's weights."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    download = commands.add_parser("download", help="fetch and extract a variant's zip")
    download.add_argument("variant", choices=list(VARIANTS))
    download.add_argument(
        "--cache-dir",
        default=None,
        help="destination (default: $DREAMSIM_HOME or ~/.cache/dreamsim)",
    )
    download.add_argument(
        "--from-hub",
        action="store_true",
        help="the untuned backbones from the Hugging Face Hub, into its cache (the default "
        "for variants without a release)",
    )
    args = parser.parse_args(argv)
    variant = VARIANTS[args.variant]
    try:
        if args.from_hub or variant.url is None:
            for path in fetch_from_hub(variant):
                print(f"{args.variant}: {path}")
            return 0
        folder = checkpoint_folder(variant, args.cache_dir, download=True)
    except DreamSimError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{args.variant}: ready in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
