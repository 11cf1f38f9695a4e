"""``python -m dreamsim download VARIANT [--cache-dir DIR] [--from-hub]``: fetch a variant's
official zip, or its untuned backbones from the Hugging Face Hub.

``python -m dreamsim export VARIANT OUT [--format onnx|safetensors] [--precision fp32|int8]``:
write the variant with its LoRA merged, as an ONNX graph or one safetensors file.
"""

from __future__ import annotations

import argparse
import sys

from .errors import DreamSimError
from .variants import VARIANTS
from .weights import checkpoint_folder, fetch_from_hub

EXPORT_FORMATS = ("onnx", "safetensors")  # dreamsim.exporter.FORMATS, without importing torch


def export_variant(args: argparse.Namespace) -> str:
    """Builds the variant on CPU and writes it; returns what to print."""
    from .exporter import export
    from .model import dreamsim

    model, _ = dreamsim(
        cache_dir=args.cache_dir,
        dreamsim_type=args.variant.removesuffix("_patch"),
        use_patch_model=args.variant.endswith("_patch"),
        device="cpu",
        normalize_embeds=not args.no_normalize,
        download=False,
    )
    path = export(model, args.out, format=args.format, precision=args.precision)
    return f"{args.variant}: {args.format} ({args.precision}) written to {path}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dreamsim", description="Download or export DreamSim's weights."
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
    export = commands.add_parser(
        "export", help="write a variant with its LoRA merged (ONNX graph or one safetensors)"
    )
    export.add_argument("variant", choices=list(VARIANTS))
    export.add_argument("out", help="the file to write")
    export.add_argument("--format", choices=EXPORT_FORMATS, default="onnx")
    export.add_argument(
        "--precision",
        choices=("fp32", "int8"),
        default="fp32",
        help="int8: ONNX Runtime's dynamic quantization of the linear layers (onnx only)",
    )
    export.add_argument(
        "--cache-dir", default=None, help="the release files (default: $DREAMSIM_HOME)"
    )
    export.add_argument(
        "--no-normalize", action="store_true", help="raw embeddings (normalize_embeds=False)"
    )
    args = parser.parse_args(argv)
    if args.command == "export":
        if args.precision == "int8" and args.format != "onnx":
            parser.error("--precision int8 quantizes ONNX graphs only (--format onnx)")
        try:
            print(export_variant(args))
        except (DreamSimError, ValueError) as error:
            print(f"{parser.prog} export: error: {error}", file=sys.stderr)
            return 2
        return 0
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
