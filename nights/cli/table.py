"""The table's commands: ``sample``, ``info``, ``stats``, ``build``, ``verify``."""

from __future__ import annotations

import json
from pathlib import Path

from . import options


def add_commands(commands) -> None:
    """Adds ``sample``, ``info``, ``stats``, ``build`` and ``verify`` to ``nights``."""
    sample = options.command(
        commands,
        "sample",
        _sample,
        "write the synthetic NIGHTS sample",
        "Write a synthetic NIGHTS folder in the exact release layout (data.csv, ref/, "
        "distort/, an unfiltered set and JND votes). Deterministic per seed.",
    )
    sample.add_argument("out", type=Path, help="folder to create")
    sample.add_argument("--triplets", type=int, default=240, help="rows of data.csv (%(default)s)")
    sample.add_argument("--image-size", type=int, default=768, help="pixels (%(default)s)")
    sample.add_argument(
        "--unfiltered",
        type=int,
        default=None,
        help="rows of the unfiltered set (default: half of --triplets)",
    )
    sample.add_argument("--seed", type=int, default=0, help="random seed (%(default)s)")
    options.add_overwrite(sample)

    info = options.command(
        commands,
        "info",
        _info,
        "what is where, rows per split",
        "Show where NIGHTS data is, and rows and vote agreement per split: all rows, and "
        "those the default vote filter keeps (upstream's votes >= 6 for the release, the "
        "policy recorded in provenance.json for a split written by nights); a warning names "
        "the filter where it leaves no row of a split.",
    )
    options.add_root(info)
    info.add_argument(
        "--remote",
        action="store_true",
        help="counts from the server's data.csv, read out of nights.zip with Range requests "
        "(nothing else is downloaded)",
    )
    options.add_base_url(info)
    options.add_quiet(info)

    stats = options.command(
        commands,
        "stats",
        _stats,
        "vote agreement statistics",
        "Agreement among voters per split, vote count, prompt or is_imagenet.",
    )
    options.add_root(stats)
    options.add_variant(stats)
    options.add_rows(stats, **options.EVERY_ROW)
    stats.add_argument(
        "--by",
        choices=("split", "votes", "prompt", "is_imagenet", "none"),
        default="split",
        help="grouping (default: %(default)s)",
    )
    options.add_quiet(stats)

    build = options.command(
        commands,
        "build",
        _build,
        "build the cached Arrow table",
        "Validate the CSV, check every image and build the memory-mapped Arrow table under "
        "$NIGHTS_HOME/tables (load_nights does this on first use).",
    )
    options.add_root(build)
    options.add_variant(build)
    build.add_argument(
        "--images",
        choices=("path", "bytes", "pixels"),
        default="path",
        help="store image paths (no copy, default), the original PNG bytes, or (with "
        "--image-size) the resized copy as raw uint8 pixels, read without decoding",
    )
    build.add_argument(
        "--image-size",
        type=int,
        default=None,
        metavar="N",
        help="store a pre-resized NxN copy (DreamSim's bicubic resize), as PNG unless "
        "--images pixels",
    )
    build.add_argument(
        "--jobs", type=int, default=None, help="processes for resizing (default: every core)"
    )
    build.add_argument("--rebuild", action="store_true", help="build again even if cached")
    options.add_quiet(build)

    verify = options.command(
        commands,
        "verify",
        _verify,
        "check the CSV and every image",
        "Validate the CSV and check that every referenced image exists and decodes; print "
        "sizes and problems. Exits 1 when anything is wrong.",
    )
    options.add_root(verify)
    options.add_variant(verify, ("nights", "unfiltered", "jnd"))
    verify.add_argument(
        "--no-decode",
        action="store_true",
        help="read image headers only (faster, misses truncated files)",
    )
    verify.add_argument(
        "--no-checksums",
        action="store_true",
        help="check sizes only against the download manifest, not sha256",
    )
    verify.add_argument("--report", type=Path, default=None, help="write a JSON report here")
    options.add_quiet(verify)


def _sample(args) -> int:
    from ..synthetic import make_synthetic_nights

    out = make_synthetic_nights(
        args.out,
        n_triplets=args.triplets,
        image_size=args.image_size,
        seed=args.seed,
        n_unfiltered=args.unfiltered,
        overwrite=args.overwrite,
    )
    print(f"wrote the synthetic sample to {out}")
    print(f"try: nights info --root {out}")
    return 0


def _remote_info(args) -> int:
    """Counts per split from data.csv read out of the remote nights.zip (no image fetched)."""
    import tempfile

    from ..releases import CSV_IN_FULL_ZIP, FULL_ZIP, file_url
    from ..remote_zip import RemoteZip
    from ..schema import read_data_csv
    from ..transfer import HttpClient

    remote = RemoteZip(HttpClient(), file_url(FULL_ZIP, args.base_url), FULL_ZIP)
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "data.csv"
        path.write_bytes(remote.read(CSV_IN_FULL_ZIP))
        frame = read_data_csv(path)
    print(f"{remote.url}: {remote.size / 1e9:.2f} GB, {len(remote.names())} members")
    counts = frame.groupby("split").agg(
        triplets=("id", "size"), votes_ge_6=("votes", lambda v: int((v >= 6).sum()))
    )
    print(counts.to_string())
    return 0


def _info(args) -> int:
    from .. import _paths
    from ..errors import DatasetNotFoundError
    from ..table import VARIANTS, origin_min_votes, resolve_source

    if args.remote:
        return _remote_info(args)
    print(f"NIGHTS_HOME: {_paths.nights_home()}")
    found_any = False
    for variant in VARIANTS:
        try:
            source = resolve_source(args.root, variant)
        except DatasetNotFoundError:
            print(f"{variant}: not found")
            continue
        found_any = True
        print(f"{variant}: {source.csv_path}")
        if variant == "jnd":
            continue
        _print_rows(args, variant, origin_min_votes(source))
    if not found_any:
        print(
            "nothing here yet: `nights download chunked` fetches the release, "
            "`nights sample DIR` writes the synthetic sample"
        )
    return 0


def _print_rows(args, variant: str, policy: int | None) -> None:
    """Rows and agreement per split: every row, and those the origin's vote filter keeps
    (a warning names the filter where it leaves none of a split)."""
    from ..table import load_nights
    from ..votes import agreement_stats

    by = "split" if variant == "nights" else None
    every, kept = (
        agreement_stats(
            load_nights(
                "all",
                root=args.root,
                variant=variant,
                min_votes=min_votes,
                progress=options.progress(args),
            ),
            by=by,
        )
        for min_votes in (None, policy or 0)
    )
    if policy is None:
        print("vote filter by default: none (its provenance.json records none)")
    else:
        column = f"votes>={policy}"
        every.insert(1, column, kept["triplets"].reindex(every.index).fillna(0).astype(int))
        for group, row in every.iterrows():
            if row["triplets"] and not row[column]:
                print(f"warning: the default vote filter {column} leaves no row of {group}")
    print(every.to_string(float_format=lambda v: f"{v:.3f}"))


def _stats(args) -> int:
    from ..table import load_nights
    from ..votes import agreement_stats

    table = load_nights(
        args.split,
        root=args.root,
        variant=args.variant,
        min_votes=args.min_votes,
        progress=options.progress(args),
    )
    stats = agreement_stats(table, by=None if args.by == "none" else args.by)
    print(stats.to_string(float_format=lambda v: f"{v:.3f}"))
    return 0


def _build(args) -> int:
    from ..table import BuildOptions, build_table, resolve_source

    folder = build_table(
        resolve_source(args.root, args.variant),
        BuildOptions(args.images, args.image_size),
        rebuild=args.rebuild,
        progress=options.progress(args),
        jobs=args.jobs,
    )
    meta = json.loads((folder / "meta.json").read_text())
    print(f"{meta['rows']} rows -> {folder}")
    return 0


def _verify(args) -> int:
    from .._files import write_atomic
    from ..verify import verify_folder

    report = verify_folder(
        args.root,
        args.variant,
        decode=not args.no_decode,
        checksums=not args.no_checksums,
        progress=options.progress(args),
    )
    print(report.summary())
    if args.report:
        write_atomic(args.report, json.dumps({**report.__dict__, "ok": report.ok}, indent=2))
        print(f"report written to {args.report}")
    return 0 if report.ok else 1
