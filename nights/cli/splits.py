"""``nights filter``: a vote-filtered split written as a NIGHTS folder or Parquet shards."""

from __future__ import annotations

from pathlib import Path

from . import options


def add_commands(commands) -> None:
    """Adds ``filter`` to ``nights``."""
    parser = options.command(
        commands,
        "filter",
        _filter,
        "write a vote-filtered split",
        "Select triplets by votes or ids and write them as a NIGHTS folder (data.csv + "
        "images) or Parquet shards, with provenance.json.",
    )
    options.add_root(parser)
    options.add_variant(parser)
    options.add_rows(parser, **options.EVERY_ROW)
    parser.add_argument("--max-votes", type=int, default=None, help="keep rows with <= N votes")
    parser.add_argument(
        "--min-agreement",
        type=float,
        default=None,
        help="keep rows whose majority share is >= X (0.5..1)",
    )
    unanimity = parser.add_mutually_exclusive_group()
    unanimity.add_argument(
        "--unanimous",
        dest="unanimous",
        action="store_true",
        default=None,
        help="keep unanimous rows only",
    )
    unanimity.add_argument(
        "--not-unanimous",
        dest="unanimous",
        action="store_false",
        help="keep non-unanimous rows only",
    )
    parser.add_argument("--ids", type=Path, default=None, help="file of ids to keep, one a line")
    parser.add_argument("--exclude-ids", type=Path, default=None, help="file of ids to drop")
    parser.add_argument(
        "--exclude-audit",
        type=Path,
        default=None,
        metavar="AUDIT",
        help="audit.parquet from `nights audit`: drop the triplets whose model disagrees with "
        "the humans by more than --max-margin",
    )
    parser.add_argument(
        "--max-margin",
        type=float,
        default=1.0,
        help="disagreement margin, in standard deviations (default: %(default)s)",
    )
    parser.add_argument(
        "--audit-metric", default=None, help="metric of the audit to use (default: its first)"
    )
    parser.add_argument("--out", type=Path, default=None, help="folder to write")
    parser.add_argument(
        "--format",
        choices=("nights", "parquet"),
        default="nights",
        help="output format (default: %(default)s)",
    )
    parser.add_argument(
        "--link",
        choices=("auto", "copy", "hardlink", "symlink"),
        default="auto",
        help="how images are placed in a NIGHTS folder (default: %(default)s)",
    )
    options.add_overwrite(parser)
    parser.add_argument("--note", default=None, help="text stored in provenance.json")
    parser.add_argument("--dry-run", action="store_true", help="count, write nothing")
    options.add_quiet(parser)


def _filter(args) -> int:
    from ..splits import write_split
    from ..table import load_nights
    from ..votes import filter_votes

    if not args.out and not args.dry_run:
        args.usage_error("--out is required (or --dry-run)")
    table = load_nights(
        args.split,
        root=args.root,
        variant=args.variant,
        min_votes=None,
        progress=options.progress(args),
    )
    table = filter_votes(
        table,
        min_votes=args.min_votes,
        max_votes=args.max_votes,
        min_agreement=args.min_agreement,
        unanimous=args.unanimous,
        ids=args.ids,
        exclude_ids=args.exclude_ids,
    )
    if args.exclude_audit:
        from ..audit import iter_label_noise_ids

        flagged = sorted(
            iter_label_noise_ids(args.exclude_audit, args.max_margin, args.audit_metric)
        )
        table = filter_votes(table, exclude_ids=flagged)
        print(
            f"excluded {len(flagged)} triplet(s) where the audit disagrees with the humans "
            f"(disagreement margin > {args.max_margin} sd)"
        )
    if args.dry_run:
        print(f"{len(table)} triplet(s) pass the filter (nothing written)")
        return 0
    out = write_split(
        table,
        args.out,
        format=args.format,
        link=args.link,
        overwrite=args.overwrite,
        note=args.note,
    )
    print(f"wrote {len(table)} triplet(s) to {out} ({args.format})")
    return 0
