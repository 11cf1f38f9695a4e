"""``nights publish``: NIGHTS as a Hugging Face Hub dataset with its votes, written and pushed."""

from __future__ import annotations

from pathlib import Path

from . import options


def add_commands(commands) -> None:
    """Adds ``publish`` to ``nights``."""
    parser = options.command(
        commands,
        "publish",
        _publish,
        "write (and push) NIGHTS as a Hugging Face Hub dataset with its votes",
        "Write a dataset repository folder: one config per variant (default: the 20k release "
        "with train/val/test; unfiltered; jnd) or per split set written by `nights filter "
        "--out` (--split), Parquet shards with the original PNG bytes and every column, and a "
        "dataset card generated from provenance.json. datasets.load_dataset(OUT) and "
        "load_nights(root=OUT) read it. With --push, check it and upload it (token from "
        "HF_TOKEN or `hf auth login`); an existing OUT is pushed as it is.",
    )
    parser.add_argument("out", type=Path, help="folder to write (or to push, when it exists)")
    parser.add_argument(
        "--root",
        default=None,
        help="the NIGHTS folder, or hf://datasets/OWNER/NAME (default: $NIGHTS_HOME)",
    )
    parser.add_argument(
        "--variant",
        nargs="+",
        choices=("nights", "unfiltered", "jnd"),
        default=None,
        help="variants to write (default: every one found, none with --split)",
    )
    parser.add_argument(
        "--split",
        action="append",
        default=[],
        metavar="[NAME=]DIR",
        help="a split set folder (with provenance.json) as config NAME (default: the folder's "
        "name); repeatable",
    )
    options.add_overwrite(parser)
    parser.add_argument("--push", metavar="OWNER/NAME", default=None, help="upload to the Hub")
    parser.add_argument("--private", action="store_true", help="create the Hub repo private")
    parser.add_argument("--revision", metavar="BRANCH", default=None, help="branch to push to")
    options.add_quiet(parser)


def _publish(args) -> int:
    from ..publish import SplitSet, push_folder, write_hub_folder

    reuse = args.push and args.out.exists() and not args.overwrite
    if reuse and not (args.variant or args.split):
        print(f"{args.out} exists: pushing it as it is (--overwrite writes it again)")
    else:
        result = write_hub_folder(
            args.out,
            args.root,
            variants=args.variant,
            split_sets=[SplitSet.parse(text) for text in args.split],
            overwrite=args.overwrite,
            progress=options.progress(args),
        )
        print(result.summary())
    if args.push:
        pushed = push_folder(args.out, args.push, private=args.private, revision=args.revision)
        print(f"pushed to {pushed.url} (commit {pushed.commit})")
    else:
        print(
            f"check it with datasets.load_dataset({str(args.out)!r}); push with --push OWNER/NAME"
        )
    return 0
