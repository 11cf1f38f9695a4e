"""``nights audit``: how well metrics agree with the human votes."""

from __future__ import annotations

from pathlib import Path

from . import options


def add_commands(commands) -> None:
    """Adds ``audit`` to ``nights``."""
    parser = options.command(
        commands,
        "audit",
        _audit,
        "score triplets with metrics; agreement with the humans",
        "Score every triplet of a split with one or more metrics and report how well each "
        "agrees with the human votes (2AFC with soft targets, bootstrap intervals, by "
        "split/is_imagenet/prompt/vote count, vote likelihood), the confident disagreements "
        "(label-noise candidates), as Parquet, JSON and a single-file HTML report. Embeddings "
        "and distances are cached by image content, so a rerun recomputes nothing. Under "
        "torchrun the table is sharded by rank and rank 0 merges. With no arguments: the "
        "release in $NIGHTS_HOME, else the embedded synthetic sample; DreamSim (ensemble) when "
        "its weights are in $DREAMSIM_HOME, else PSNR and SSIM.",
    )
    options.add_root(parser)
    options.add_variant(parser)
    options.add_rows(parser, **options.TEST_VIEW)
    parser.add_argument(
        "--metric",
        action="append",
        default=None,
        help="psnr, ssim, ms_ssim, dreamsim[:VARIANT] or baseline:VARIANT (repeatable)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        help="images per batch (default: 32 on CPU; on CUDA 64-256 by the card's memory; "
        "halved by itself when the device runs out of memory)",
    )
    parser.add_argument("--num-workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: best)")
    parser.add_argument(
        "--dtype",
        choices=("fp32", "bf16", "fp16"),
        default="fp32",
        help="autocast dtype for DreamSim on GPU (default: %(default)s)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: nights-audit/SPLIT)"
    )
    options.add_limit(parser)
    parser.add_argument("--jnd", action="store_true", help="also JND average precision")
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="score cache (default: $NIGHTS_HOME/cache/scores.sqlite)",
    )
    options.add_quiet(parser)


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


def _audit(args) -> int:
    import os

    import pandas as pd
    import torch

    from ..audit import (
        agreement_table,
        audit_frame,
        jnd_scores,
        score_table,
        summarize,
        write_outputs,
    )
    from ..metrics import EmbeddingMetric, get_metric
    from ..score_cache import ScoreCache
    from ..table import load_jnd, load_nights, release_or_sample

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        backend = "nccl" if args.device and args.device.startswith("cuda") else "gloo"
        torch.distributed.init_process_group(backend)
    root = release_or_sample(args.root)
    names = args.metric or (["dreamsim"] if _ensemble_weights_present() else ["psnr", "ssim"])
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    device = args.device
    if device is None and world > 1 and torch.cuda.is_available():
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    metrics = [get_metric(name, device=device, dtype=dtype) for name in names]
    progress = options.progress(args) and rank == 0
    tables = {}
    for metric in metrics:
        size = 224 if isinstance(metric, EmbeddingMetric) else None
        if size not in tables:
            table = load_nights(
                args.split,
                root=root,
                variant=args.variant,
                min_votes=args.min_votes,
                image_size=size,
                images="path",
                progress=progress,
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
                progress=progress,
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
            load_jnd(root, progress=progress),
            metrics,
            cache=cache,
            batch_size=args.batch_size,
            progress=progress,
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
