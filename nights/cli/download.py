"""``nights download``: a release, or the images of a split or a list of ids."""

from __future__ import annotations

from pathlib import Path

from . import options


def add_commands(commands) -> None:
    """Adds ``download`` to ``nights``."""
    from ..releases import RELEASES

    parser = options.command(
        commands,
        "download",
        _download,
        "download a release (resumable, parallel, verified)",
        "Download a NIGHTS release into --root (default $NIGHTS_HOME). "
        + " ".join(f"{r.name}: {r.description}." for r in RELEASES.values())
        + " Interrupted, the same command resumes without refetching finished files. "
        "--split/--ids fetch only those triplets' images out of nights.zip.",
    )
    parser.add_argument("variant", choices=list(RELEASES), help="which release")
    options.add_root(parser)
    options.add_split(parser, "all")
    parser.add_argument(
        "--ids",
        type=Path,
        default=None,
        help="fetch only these triplets (a file of ids, one a line)",
    )
    parser.add_argument(
        "--jobs", type=int, default=8, help="simultaneous connections (default: %(default)s)"
    )
    options.add_base_url(parser)
    parser.add_argument(
        "--dry-run", action="store_true", help="print what would be fetched and how many bytes"
    )
    parser.add_argument(
        "--keep-archives", action="store_true", help="keep the zips after extraction"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds without data before a retry (default: %(default)s)",
    )
    parser.add_argument(
        "--retries", type=int, default=8, help="tries per request (default: %(default)s)"
    )
    options.add_quiet(parser)


def _download(args) -> int:
    from ..download import download
    from ..transfer import HttpClient, RetryPolicy
    from ..votes import read_id_file

    client = HttpClient(
        connections=args.jobs,
        timeout=(10.0, args.timeout),
        retry=RetryPolicy(attempts=args.retries),
    )
    report = download(
        args.variant,
        args.root,
        split=None if args.split == "all" else args.split,
        ids=sorted(read_id_file(args.ids)) if args.ids else None,
        jobs=args.jobs,
        base_url=args.base_url,
        dry_run=args.dry_run,
        keep_archives=args.keep_archives,
        progress=options.progress(args),
        client=client,
    )
    summary = report.summary()
    print(summary if args.dry_run or args.verbose else summary.splitlines()[-1])
    return 0
