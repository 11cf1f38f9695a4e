"""The ``nights`` command: ``nights COMMAND --help`` explains each one."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from . import _paths
from .errors import NightsError

EPILOG = """data location: --root, else $NIGHTS_HOME (default ~/.cache/nights). --root may be the
release folder (holding data.csv) or the folder above it.

examples:
  nights sample ./nights-sample               write the synthetic sample
  nights info --root ./nights-sample          what is there, rows per split
  nights filter --root ./nights-sample --min-votes 8 --out ./min8
  nights verify --root ./nights-sample
"""


def _add_root(parser: argparse.ArgumentParser, variants=("nights", "unfiltered")) -> None:
    parser.add_argument(
        "--root", type=Path, default=None, help="NIGHTS folder (default: $NIGHTS_HOME)"
    )
    parser.add_argument(
        "--variant",
        choices=variants,
        default=variants[0],
        help="which table (default: %(default)s)",
    )


def _add_build_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--images",
        choices=("path", "bytes"),
        default="path",
        help="store image paths (no copy, default) or the original PNG bytes",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        metavar="N",
        help="store a pre-resized NxN copy (DreamSim's bicubic resize)",
    )
    parser.add_argument("--jobs", type=int, default=None, help="processes for resizing")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _progress(args) -> bool | None:
    return False if getattr(args, "quiet", False) else None


def _cmd_sample(args) -> int:
    from .synthetic import make_synthetic_nights

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

    from .releases import CSV_IN_FULL_ZIP, FULL_ZIP, file_url
    from .remote_zip import RemoteZip
    from .schema import read_data_csv
    from .transfer import HttpClient

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


def _cmd_info(args) -> int:
    from .errors import DatasetNotFoundError
    from .table import VARIANTS, load_nights, resolve_source
    from .votes import agreement_stats

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
        table = load_nights(
            "all", root=args.root, variant=variant, min_votes=None, progress=_progress(args)
        )
        stats = agreement_stats(table, by="split" if variant == "nights" else None)
        kept = load_nights(
            "all", root=args.root, variant=variant, min_votes=6, progress=_progress(args)
        )
        kept_stats = agreement_stats(kept, by="split" if variant == "nights" else None)
        stats.insert(
            1, "votes>=6", kept_stats["triplets"].reindex(stats.index).fillna(0).astype(int)
        )
        print(stats.to_string(float_format=lambda v: f"{v:.3f}"))
    if not found_any:
        print(
            "nothing here yet: `nights download chunked` fetches the release, "
            "`nights sample DIR` writes the synthetic sample"
        )
    return 0


def _cmd_stats(args) -> int:
    from .table import load_nights
    from .votes import agreement_stats

    table = load_nights(
        args.split,
        root=args.root,
        variant=args.variant,
        min_votes=args.min_votes,
        progress=_progress(args),
    )
    print(
        agreement_stats(table, by=None if args.by == "none" else args.by).to_string(
            float_format=lambda v: f"{v:.3f}"
        )
    )
    return 0


def _cmd_build(args) -> int:
    from .table import BuildOptions, build_table, resolve_source

    source = resolve_source(args.root, args.variant)
    folder = build_table(
        source,
        BuildOptions(args.images, args.image_size),
        rebuild=args.rebuild,
        progress=_progress(args),
        jobs=args.jobs,
    )
    meta = json.loads((folder / "meta.json").read_text())
    print(f"{meta['rows']} rows -> {folder}")
    return 0


def _cmd_filter(args) -> int:
    from .table import load_nights
    from .votes import filter_votes, write_split

    table = load_nights(
        args.split, root=args.root, variant=args.variant, min_votes=None, progress=_progress(args)
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
        from .audit import iter_label_noise_ids

        flagged = sorted(
            iter_label_noise_ids(args.exclude_audit, args.max_margin, args.audit_metric)
        )
        table = filter_votes(table, exclude_ids=flagged)
        print(
            f"excluded {len(flagged)} triplet(s) the audit finds mislabelled "
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


def _cmd_download(args) -> int:
    from .download import download
    from .transfer import HttpClient, RetryPolicy
    from .votes import read_id_file

    client = HttpClient(
        connections=args.jobs,
        timeout=(10.0, args.timeout),
        retry=RetryPolicy(attempts=args.retries),
    )
    report = download(
        args.variant,
        args.root,
        split=args.split,
        ids=sorted(read_id_file(args.ids)) if args.ids else None,
        jobs=args.jobs,
        base_url=args.base_url,
        dry_run=args.dry_run,
        keep_archives=args.keep_archives,
        progress=_progress(args),
        client=client,
    )
    summary = report.summary()
    print(summary if args.dry_run or args.verbose else summary.splitlines()[-1])
    return 0


def _ensemble_weights_present() -> bool:
    try:
        from dreamsim.errors import DreamSimError
        from dreamsim.variants import VARIANTS
        from dreamsim.weights import checkpoint_folder
    except ImportError:
        return False
    try:
        checkpoint_folder(VARIANTS["ensemble"], None, download=False, verify=False)
    except DreamSimError:
        return False
    return True


def _default_audit_root(root: Path | None) -> Path:
    """--root, else NIGHTS_HOME when it holds the release, else the embedded sample."""
    from .errors import DatasetNotFoundError
    from .synthetic import ensure_sample
    from .table import resolve_source

    if root is not None:
        return root
    try:
        resolve_source(None, "nights")
        return _paths.nights_home()
    except DatasetNotFoundError:
        print(
            f"no NIGHTS release in {_paths.nights_home()}: auditing the embedded synthetic "
            "sample (download with `nights download chunked`)"
        )
        return ensure_sample()


def _cmd_audit(args) -> int:
    import os

    import pandas as pd
    import torch

    from .audit import (
        agreement_table,
        audit_frame,
        jnd_scores,
        score_table,
        summarize,
        write_outputs,
    )
    from .metrics import EmbeddingMetric, get_metric
    from .score_cache import ScoreCache
    from .table import load_jnd, load_nights

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        backend = "nccl" if args.device and args.device.startswith("cuda") else "gloo"
        torch.distributed.init_process_group(backend)
    root = _default_audit_root(args.root)
    names = args.metric or (["dreamsim"] if _ensemble_weights_present() else ["psnr", "ssim"])
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    device = args.device
    if device is None and world > 1 and torch.cuda.is_available():
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    metrics = [get_metric(name, device=device, dtype=dtype) for name in names]
    options = {"min_votes": args.min_votes, "progress": _progress(args) and rank == 0}
    tables = {}
    for metric in metrics:
        size = 224 if isinstance(metric, EmbeddingMetric) else None
        if size not in tables:
            table = load_nights(
                args.split,
                root=root,
                variant=args.variant,
                image_size=size,
                images="path",
                **options,
            )
            tables[size] = table.select(range(min(args.limit, len(table)))) if args.limit else table
    cache = ScoreCache(args.cache)
    scores = []
    for metric in metrics:
        table = tables[224 if isinstance(metric, EmbeddingMetric) else None]
        if world > 1:
            from datasets.distributed import split_dataset_by_node

            table = split_dataset_by_node(table, rank=rank, world_size=world)
        scores.append(
            score_table(
                table,
                [metric],
                cache=cache,
                batch_size=args.batch_size,
                num_workers=args.num_workers,
                progress=options["progress"],
            )
        )
    scores = pd.concat(scores, ignore_index=True)
    out = args.out or Path("nights-audit") / args.split
    if world > 1:
        parts = out / "parts"
        parts.mkdir(parents=True, exist_ok=True)
        scores.to_parquet(parts / f"scores-rank{rank:03d}.parquet", index=False)
        torch.distributed.barrier()
        if rank != 0:
            torch.distributed.destroy_process_group()
            return 0
        scores = pd.concat(
            [pd.read_parquet(parts / f"scores-rank{r:03d}.parquet") for r in range(world)],
            ignore_index=True,
        )
    reference = next(iter(tables.values()))
    order = {identifier: index for index, identifier in enumerate(reference["id"])}
    metric_order = {metric.name: index for index, metric in enumerate(metrics)}
    scores = scores.sort_values(
        by=["metric", "id"],
        key=lambda column: column.map(metric_order if column.name == "metric" else order),
    ).reset_index(drop=True)
    jnd = None
    if args.jnd:
        jnd = jnd_scores(
            load_jnd(root, progress=options["progress"]),
            metrics,
            cache=cache,
            batch_size=args.batch_size,
            progress=options["progress"],
        )
    audit = audit_frame(scores, reference)
    summary = summarize(audit, jnd=jnd)
    for metric in metrics:
        summary["metrics"][metric.name]["cache_id"] = metric.cache_id
    summary["source"] = {
        "root": str(root),
        "split": args.split,
        "min_votes": args.min_votes,
        "limit": args.limit,
        "processes": world,
    }
    paths = write_outputs(out, audit, summary, tables.get(None, reference))
    print(agreement_table(summary))
    if jnd:
        print("JND average precision: " + ", ".join(f"{k} {v:.3f}" for k, v in jnd.items()))
    print("wrote " + ", ".join(str(p) for p in paths.values() if p.exists()))
    if world > 1:
        torch.distributed.destroy_process_group()
    return 0


def _app_dataset(args):
    """The FiftyOne dataset of a split, with the split's audit when there is one."""
    from .table import load_nights
    from .visualize import to_fiftyone

    root = _default_audit_root(args.root)
    table = load_nights(args.split, root=root, min_votes=args.min_votes, progress=_progress(args))
    audit = args.audit
    default_audit = Path("nights-audit") / args.split / "audit.parquet"
    if audit is None and default_audit.exists():
        audit = default_audit
    if audit is None:
        print(
            f"no audit given and none at {default_audit}: showing votes only "
            f"(run `nights audit --split {args.split}` first for model fields)"
        )
    name = args.name or f"nights-{args.split}"
    dataset = to_fiftyone(
        table,
        name=name,
        audit=audit,
        embeddings=args.embeddings,
        overwrite=args.rebuild,
        progress=_progress(args),
    )
    return dataset, root


def _cmd_app(args) -> int:
    dataset, _ = _app_dataset(args)
    import fiftyone as fo

    session = fo.launch_app(
        dataset, remote=args.remote, address=args.address, port=args.port, auto=not args.remote
    )
    print(
        f"FiftyOne App: http://{args.address}:{args.port}/ (dataset {dataset.name}; saved "
        f"views: {', '.join(dataset.list_saved_views())}). Ctrl-C to stop."
    )
    session.wait(-1 if args.remote else 1)
    return 0


def _cmd_export_fiftyone(args) -> int:
    dataset, root = _app_dataset(args)
    import fiftyone as fo

    from .table import resolve_source

    image_root = resolve_source(root, "nights").image_root
    dataset.export(
        export_dir=str(args.out),
        dataset_type=fo.types.FiftyOneDataset,
        rel_dir=str(image_root),
        overwrite=args.overwrite,
    )
    print(
        f"exported {dataset.name} to {args.out} (FiftyOneDataset, media under data/ with the "
        "release's ref/NNN/... layout); publish with fiftyone.utils.huggingface.push_to_hub"
    )
    return 0


def _exclude_flagged_workers(votes, min_rt_ms: float | None):
    """Drops workers that fail quality checks (sentinels and repeats when the votes come from a
    campaign export, speed always); keeps the 2AFC answers of the others."""
    from annotation.aggregate import worker_quality

    quality = worker_quality(votes, min_rt_ms=min_rt_ms)
    flagged = quality.index[quality["excluded"]]
    if len(flagged):
        print(
            f"excluded {len(flagged)} worker(s) failing quality checks: "
            + ", ".join(f"{w} ({quality.loc[w, 'reasons']})" for w in flagged[:10]),
            file=sys.stderr,
        )
    if "kind" in votes:
        votes = votes[votes["kind"] == "2afc"]
    return votes[~votes["worker"].isin(flagged)]


def _cmd_annotate(args) -> int:
    """``nights annotate ACTION``: campaigns, the collection app, imported votes."""
    import pandas as pd

    if args.action == "create":
        from annotation.campaign import create_campaign

        from .table import load_nights

        table = load_nights(
            args.split,
            root=_default_audit_root(args.root),
            min_votes=args.min_votes,
            progress=_progress(args),
        )
        if args.limit:
            table = table.select(range(min(args.limit, len(table))))
        settings = create_campaign(
            args.campaign,
            table,
            trials_per_participant=args.trials_per_participant,
            votes_per_trial=args.votes_per_trial,
            sentinel_rate=args.sentinel_rate,
            repeats=args.repeats,
            policy=args.policy,
            jnd=args.jnd,
            seed=args.seed,
            completion_url=args.completion_url,
            image_root=args.image_root,
            time_limit_minutes=args.time_limit,
        )
        print(
            f"campaign {args.campaign}: {len(table)} triplets; admin token "
            f"{settings['admin_token']} (keep it; the admin API needs it)"
        )
        return 0
    if args.action == "serve":
        from annotation.campaign import CampaignStore
        from annotation.server import serve

        CampaignStore(args.campaign)  # a missing campaign fails before "serving" is printed
        print(f"serving {args.campaign} on http://{args.host}:{args.port}/?PROLIFIC_PID=...")
        serve(args.campaign, host=args.host, port=args.port, workers=args.workers)
        return 0
    if args.action in ("status", "export", "plan", "release"):
        from annotation.campaign import CampaignStore, plan_campaign

        store = CampaignStore(args.campaign)
        if args.action == "release":
            freed = store.release(args.worker)
            print(f"released {args.worker}: {freed} unanswered trial(s) back in the pool")
        elif args.action == "status":
            print(json.dumps(store.progress(), indent=2))
        elif args.action == "plan":
            planned = plan_campaign(store)
            planned.to_csv(args.out or sys.stdout)
            print(
                f"{int(planned['needs_more'].sum())} of {len(planned)} triplets need more "
                f"votes ({store.settings.get('policy', 'target')} policy)",
                file=sys.stderr,
            )
        else:
            store.votes().to_csv(args.out or sys.stdout, index=False)
        return 0
    from annotation.aggregate import aggregate, krippendorff_alpha, merge_into_split
    from annotation.importers import read_votes

    votes = pd.concat([read_votes(path, args.format) for path in args.votes], ignore_index=True)
    if args.action == "import":
        votes.to_csv(args.out or sys.stdout, index=False)
        print(
            f"{len(votes)} votes from {votes['worker'].nunique()} workers on "
            f"{votes['task'].nunique()} triplets",
            file=sys.stderr,
        )
        return 0
    votes = _exclude_flagged_workers(votes, args.min_rt_ms)
    per_triplet = aggregate(votes, method=args.method)
    print(
        f"{len(per_triplet)} triplets, {len(votes)} votes; Krippendorff's alpha "
        f"{krippendorff_alpha(votes):.3f}",
        file=sys.stderr,
    )
    if args.out:
        from .table import load_nights

        table = load_nights(
            "all", root=_default_audit_root(args.root), min_votes=None, progress=_progress(args)
        )
        merge_into_split(table, per_triplet, args.out, note=f"annotation: {args.method}")
        print(f"wrote the new split to {args.out}", file=sys.stderr)
    else:
        per_triplet.to_csv(sys.stdout)
    return 0


def _cmd_verify(args) -> int:
    from .verify import verify_folder

    report = verify_folder(
        args.root,
        args.variant,
        decode=not args.no_decode,
        checksums=not args.no_checksums,
        progress=_progress(args),
    )
    print(report.summary())
    if args.report:
        args.report.write_text(json.dumps({**report.__dict__, "ok": report.ok}, indent=2))
        print(f"report written to {args.report}")
    return 0 if report.ok else 1


def build_parser() -> argparse.ArgumentParser:
    from .table import SPLITS

    parser = argparse.ArgumentParser(
        prog="nights",
        description="Get, inspect, audit and extend the NIGHTS dataset.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sample = commands.add_parser(
        "sample",
        help="write the synthetic NIGHTS sample",
        description="Write a synthetic NIGHTS folder in the exact release layout (data.csv, "
        "ref/, distort/, an unfiltered set and JND votes). Deterministic per seed.",
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
    sample.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    sample.set_defaults(run=_cmd_sample)

    info = commands.add_parser(
        "info",
        help="what is where, rows per split",
        description="Show where NIGHTS data is, and rows and vote agreement per split "
        "(all rows, and those upstream keeps with votes >= 6).",
    )
    info.add_argument("--root", type=Path, default=None, help="NIGHTS folder")
    info.add_argument(
        "--remote",
        action="store_true",
        help="counts from the server's data.csv, read out of nights.zip with "
        "Range requests (nothing else is downloaded)",
    )
    info.add_argument("--base-url", default=None, help="mirror (default: $NIGHTS_BASE_URL)")
    info.add_argument("--quiet", action="store_true", help="no progress bars")
    info.set_defaults(run=_cmd_info)

    stats = commands.add_parser(
        "stats",
        help="vote agreement statistics",
        description="Agreement among voters per split, vote count, prompt or is_imagenet.",
    )
    _add_root(stats)
    stats.add_argument("--split", default="all", help="split (default: all)")
    stats.add_argument("--min-votes", type=int, default=None, help="only rows with >= N votes")
    stats.add_argument(
        "--by",
        choices=("split", "votes", "prompt", "is_imagenet", "none"),
        default="split",
        help="grouping (default: %(default)s)",
    )
    stats.add_argument("--quiet", action="store_true", help="no progress bars")
    stats.set_defaults(run=_cmd_stats)

    build = commands.add_parser(
        "build",
        help="build the cached Arrow table",
        description="Validate the CSV, check every image and build the memory-mapped Arrow "
        "table under $NIGHTS_HOME/tables (load_nights does this on first use).",
    )
    _add_root(build)
    _add_build_options(build)
    build.add_argument("--rebuild", action="store_true", help="build again even if cached")
    build.set_defaults(run=_cmd_build)

    filt = commands.add_parser(
        "filter",
        help="write a vote-filtered split",
        description="Select triplets by votes or ids and write them as a NIGHTS folder "
        "(data.csv + images) or Parquet shards, with provenance.json.",
    )
    _add_root(filt)
    filt.add_argument(
        "--split",
        default="all",
        help="train, val, test, test_imagenet, test_no_imagenet or all (default)",
    )
    filt.add_argument("--min-votes", type=int, default=None, help="keep rows with >= N votes")
    filt.add_argument("--max-votes", type=int, default=None, help="keep rows with <= N votes")
    filt.add_argument(
        "--min-agreement",
        type=float,
        default=None,
        help="keep rows whose majority share is >= X (0.5..1)",
    )
    unanimity = filt.add_mutually_exclusive_group()
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
    filt.add_argument("--ids", type=Path, default=None, help="file of ids to keep, one a line")
    filt.add_argument("--exclude-ids", type=Path, default=None, help="file of ids to drop")
    filt.add_argument("--out", type=Path, required=False, help="folder to write")
    filt.add_argument(
        "--format",
        choices=("nights", "parquet"),
        default="nights",
        help="output format (default: %(default)s)",
    )
    filt.add_argument(
        "--link",
        choices=("auto", "copy", "hardlink", "symlink"),
        default="auto",
        help="how images are placed in a NIGHTS folder (default: %(default)s)",
    )
    filt.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    filt.add_argument("--note", default=None, help="text stored in provenance.json")
    filt.add_argument(
        "--exclude-audit",
        type=Path,
        default=None,
        metavar="AUDIT",
        help="audit.parquet from `nights audit`: drop the triplets whose model "
        "disagrees with the humans by more than --max-margin",
    )
    filt.add_argument(
        "--max-margin",
        type=float,
        default=1.0,
        help="disagreement margin, in standard deviations (default: %(default)s)",
    )
    filt.add_argument(
        "--audit-metric", default=None, help="metric of the audit to use (default: its first)"
    )
    filt.add_argument("--dry-run", action="store_true", help="count, write nothing")
    filt.add_argument("--quiet", action="store_true", help="no progress bars")
    filt.set_defaults(run=_cmd_filter)

    audit = commands.add_parser(
        "audit",
        help="score triplets with metrics; agreement with the humans",
        description="Score every triplet of a split with one or more metrics and report how "
        "well each agrees with the human votes (2AFC with soft targets, bootstrap "
        "intervals, by split/is_imagenet/prompt/vote count, vote likelihood), the "
        "confident disagreements (label-noise candidates), as Parquet, JSON and a "
        "single-file HTML report. Embeddings and distances are cached by image "
        "content, so a rerun recomputes nothing. Under torchrun the table is "
        "sharded by rank and rank 0 merges. With no arguments: the release in "
        "$NIGHTS_HOME, else the embedded synthetic sample; DreamSim (ensemble) when "
        "its weights are in $DREAMSIM_HOME, else PSNR and SSIM.",
    )
    audit.add_argument("--root", type=Path, default=None, help="NIGHTS folder")
    audit.add_argument("--variant", choices=("nights", "unfiltered"), default="nights")
    audit.add_argument(
        "--split",
        default="test",
        choices=SPLITS,
        help="(default: %(default)s)",
    )
    audit.add_argument(
        "--min-votes",
        type=int,
        default=6,
        help="rows with at least N votes (default: %(default)s, upstream's)",
    )
    audit.add_argument(
        "--metric",
        action="append",
        default=None,
        help="psnr, ssim, ms_ssim, dreamsim[:VARIANT] or baseline:VARIANT (repeatable)",
    )
    audit.add_argument(
        "--batch-size",
        type=int,
        help="images per batch (default: 32 on CPU; on CUDA 64-256 by the card's memory; "
        "halved by itself when the device runs out of memory)",
    )
    audit.add_argument("--num-workers", type=int, default=2, help="DataLoader workers")
    audit.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: best)")
    audit.add_argument(
        "--dtype",
        choices=("fp32", "bf16", "fp16"),
        default="fp32",
        help="autocast dtype for DreamSim on GPU (default: %(default)s)",
    )
    audit.add_argument(
        "--out", type=Path, default=None, help="output folder (default: nights-audit/SPLIT)"
    )
    audit.add_argument("--limit", type=int, default=None, help="first N triplets only")
    audit.add_argument("--jnd", action="store_true", help="also JND average precision")
    audit.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="score cache (default: $NIGHTS_HOME/cache/scores.sqlite)",
    )
    audit.add_argument("--quiet", action="store_true", help="no progress bars")
    audit.set_defaults(run=_cmd_audit)

    def add_dataset_options(command) -> None:
        command.add_argument("--root", type=Path, default=None, help="NIGHTS folder")
        command.add_argument(
            "--split",
            default="test",
            choices=SPLITS,
            help="(default: %(default)s)",
        )
        command.add_argument(
            "--min-votes", type=int, default=6, help="rows with >= N votes (default: %(default)s)"
        )
        command.add_argument(
            "--audit",
            type=Path,
            default=None,
            help="audit.parquet (default: nights-audit/SPLIT/audit.parquet when it exists)",
        )
        command.add_argument(
            "--embeddings",
            default=None,
            metavar="METRIC",
            help="store this audited metric's embeddings, with PCA/t-SNE/UMAP "
            "plots and a similarity index",
        )
        command.add_argument("--name", default=None, help="dataset name (default: nights-SPLIT)")
        command.add_argument(
            "--rebuild", action="store_true", help="build the dataset again instead of updating it"
        )
        command.add_argument("--quiet", action="store_true", help="no progress bars")

    app = commands.add_parser(
        "app",
        help="browse the triplets in the FiftyOne App",
        description="Build (or update in place) a grouped FiftyOne dataset of a split, one "
        "group per triplet with ref/left/right slices, votes, the audit's "
        "distances, choices and tags, saved views (disagreements, "
        "label_noise_candidates, one per split), and launch the App.",
    )
    add_dataset_options(app)
    app.add_argument("--port", type=int, default=5151, help="(default: %(default)s)")
    app.add_argument(
        "--remote", action="store_true", help="serve without opening a browser; print the URL"
    )
    app.add_argument(
        "--address",
        default="127.0.0.1",
        help="address to bind (default: %(default)s; 0.0.0.0 exposes it)",
    )
    app.set_defaults(run=_cmd_app)

    export = commands.add_parser(
        "export-fiftyone",
        help="write the FiftyOne dataset as a FiftyOneDataset folder",
        description="Export the dataset of a split (as `nights app` builds it) as a "
        "FiftyOneDataset folder that keeps the release's ref/NNN/... layout, ready "
        "for fiftyone.utils.huggingface.push_to_hub.",
    )
    export.add_argument("out", type=Path, help="folder to write")
    export.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    add_dataset_options(export)
    export.set_defaults(run=_cmd_export_fiftyone)

    annotate = commands.add_parser(
        "annotate",
        help="collect, import and aggregate new judgments",
        description="create: a campaign database of 2AFC (and --jnd) trials from a split; "
        "serve: the collection web app; status/plan/export: progress, the triplets the "
        "campaign's policy still wants votes for, and the votes of a campaign; import: "
        "votes from MTurk batch results, Label Studio exports or CSV into one vote table; "
        "aggregate: per-triplet votes (majority, dawid_skene, glad) and, with --out, a new "
        "split with provenance.",
    )
    annotate.add_argument(
        "action",
        choices=("create", "serve", "status", "plan", "export", "release", "import", "aggregate"),
    )
    annotate.add_argument(
        "campaign",
        nargs="?",
        type=Path,
        help="campaign .sqlite (create/serve/status/plan/export/release)",
    )
    annotate.add_argument(
        "worker", nargs="?", help="release: the participant id who returned the study"
    )
    annotate.add_argument(
        "--votes",
        type=Path,
        action="append",
        default=[],
        help="votes file (import/aggregate; repeatable)",
    )
    annotate.add_argument(
        "--format",
        choices=("csv", "mturk", "label-studio"),
        default=None,
        help="votes file format (default: guessed)",
    )
    annotate.add_argument(
        "--method", choices=("majority", "dawid_skene", "glad"), default="majority"
    )
    annotate.add_argument("--out", type=Path, default=None, help="output file or split folder")
    annotate.add_argument("--root", type=Path, default=None, help="NIGHTS folder")
    annotate.add_argument("--split", default="test")
    annotate.add_argument("--min-votes", type=int, default=None)
    annotate.add_argument("--limit", type=int, default=None, help="first N triplets only")
    annotate.add_argument("--trials-per-participant", type=int, default=20)
    annotate.add_argument("--votes-per-trial", type=int, default=5)
    annotate.add_argument("--sentinel-rate", type=float, default=0.1)
    annotate.add_argument(
        "--repeats",
        type=int,
        default=2,
        help="trials shown twice to each participant (self-consistency)",
    )
    annotate.add_argument(
        "--policy",
        default="target",
        help="which triplets still need votes: target (--votes-per-trial each), nights (while "
        "unanimous) or beta (Beta-binomial stopping); default: %(default)s",
    )
    annotate.add_argument(
        "--time-limit",
        type=float,
        default=60,
        metavar="MINUTES",
        help="create: how long a participant holds their trials; set it to the study's maximum "
        "time (default: %(default)s); unanswered trials then go back to the pool",
    )
    annotate.add_argument(
        "--image-root",
        type=Path,
        default=None,
        help="create: the folder the table's image paths are under (default: the table's own)",
    )
    annotate.add_argument("--jnd", action="store_true", help="also JND trials")
    annotate.add_argument("--seed", type=int, default=0)
    annotate.add_argument(
        "--completion-url", default=None, help="where participants go when done (e.g. Prolific's)"
    )
    annotate.add_argument("--host", default="127.0.0.1")
    annotate.add_argument("--port", type=int, default=8000)
    annotate.add_argument(
        "--workers", type=int, default=1, help="serve: server processes (default: %(default)s)"
    )
    annotate.add_argument(
        "--min-rt-ms",
        type=float,
        default=None,
        help="aggregate: exclude workers whose median response is faster",
    )
    annotate.add_argument("--quiet", action="store_true", help="no progress bars")
    annotate.set_defaults(run=_cmd_annotate)

    from .releases import RELEASES

    download = commands.add_parser(
        "download",
        help="download a release (resumable, parallel, verified)",
        description="Download a NIGHTS release into --root (default $NIGHTS_HOME). "
        + " ".join(f"{r.name}: {r.description}." for r in RELEASES.values())
        + " Interrupted, the same command resumes without refetching finished "
        "files. --split/--ids fetch only those triplets' images out of nights.zip.",
    )
    download.add_argument("variant", choices=list(RELEASES), help="which release")
    download.add_argument(
        "--root", type=Path, default=None, help="download root (default: $NIGHTS_HOME)"
    )
    download.add_argument(
        "--split",
        default=None,
        choices=SPLITS,
        help="fetch only this split's images",
    )
    download.add_argument(
        "--ids",
        type=Path,
        default=None,
        help="fetch only these triplets (a file of ids, one a line)",
    )
    download.add_argument(
        "--jobs", type=int, default=8, help="simultaneous connections (default: %(default)s)"
    )
    download.add_argument(
        "--base-url", default=None, help="mirror URL (default: $NIGHTS_BASE_URL or upstream's host)"
    )
    download.add_argument(
        "--dry-run", action="store_true", help="print what would be fetched and how many bytes"
    )
    download.add_argument(
        "--keep-archives", action="store_true", help="keep the zips after extraction"
    )
    download.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds without data before a retry (default: %(default)s)",
    )
    download.add_argument(
        "--retries", type=int, default=8, help="tries per request (default: %(default)s)"
    )
    download.add_argument("--quiet", action="store_true", help="no progress bar")
    download.set_defaults(run=_cmd_download)

    verify = commands.add_parser(
        "verify",
        help="check the CSV and every image",
        description="Validate the CSV and check that every referenced image exists and "
        "decodes; print sizes and problems. Exits 1 when anything is wrong.",
    )
    _add_root(verify, ("nights", "unfiltered", "jnd"))
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
    verify.add_argument("--quiet", action="store_true", help="no progress bars")
    verify.set_defaults(run=_cmd_verify)
    return parser


try:
    from dreamsim.errors import DreamSimError as DreamSimErrors
except ImportError:  # dreamsim's optional libraries are absent
    DreamSimErrors = NightsError


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.command == "filter" and not args.out and not args.dry_run:
        parser.error("filter: --out is required (or --dry-run)")
    if args.command == "annotate":
        if (
            args.action in ("create", "serve", "status", "plan", "export", "release")
            and not args.campaign
        ):
            parser.error(f"annotate {args.action}: give the campaign .sqlite file")
        if args.action == "release" and not args.worker:
            parser.error("annotate release: give the campaign and the participant id")
        if args.action in ("import", "aggregate") and not args.votes:
            parser.error(f"annotate {args.action}: give at least one --votes file")
        if args.action == "serve" and args.workers < 1:
            parser.error("annotate serve: --workers must be at least 1")
    try:
        return args.run(args)
    except (NightsError, FileExistsError, FileNotFoundError, ValueError, DreamSimErrors) as error:
        print(f"nights {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
