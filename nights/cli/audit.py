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
        "(label-noise candidates), as Parquet, JSON and a single-file HTML report; with "
        "--leaderboard, the metrics ranked with paired bootstrap tests of their differences. "
        "Embeddings and distances are cached by image content, so a rerun recomputes nothing. "
        "Under torchrun the table is sharded by rank and rank 0 merges. With no arguments: the "
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
        help="psnr, ssim, ms_ssim, dreamsim[:VARIANT], baseline:VARIANT, "
        "hf:MODEL_ID_OR_FOLDER[:pooled|cls|mean] (a Hugging Face vision model) or the name of "
        "an installed plugin (entry point group nights.metrics) (repeatable)",
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
        help="autocast dtype for DreamSim, on CPU (oneDNN) or GPU (default: %(default)s); "
        "bf16 is --precision bf16",
    )
    parser.add_argument(
        "--precision",
        choices=("fp32", "bf16", "fp16", "int8"),
        default=None,
        help="DreamSim's precision: fp32 (default, exact), bf16 or fp16 (autocast), int8 "
        "(linear layers quantized, CPU); anything but fp32 is measured against fp32 and the "
        "fidelity is printed and recorded",
    )
    parser.add_argument(
        "--backend",
        choices=("torch", "onnxruntime"),
        default="torch",
        help="run DreamSim on torch (default) or ONNX Runtime (CPU; fp32 or int8; needs "
        "nights[onnx]); ONNX Runtime is measured against fp32 torch too",
    )
    parser.add_argument(
        "--fidelity-on",
        action="append",
        type=Path,
        default=[],
        metavar="DIR",
        help="more triplets to measure a reduced precision or ONNX Runtime on, beside the "
        "embedded sample: a NIGHTS folder or ref_K.png, img_a_K.png, img_b_K.png images "
        "(repeatable)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: nights-audit/SPLIT)"
    )
    options.add_limit(parser)
    parser.add_argument(
        "--jnd",
        action="store_true",
        default=None,
        help="also JND average precision (with --leaderboard: whenever there are JND votes)",
    )
    parser.add_argument(
        "--leaderboard",
        action="store_true",
        help="rank the metrics: 2AFC with intervals, by is_imagenet, JND, vote likelihood, "
        "images/s, peak memory, and a paired bootstrap for each pair (leaderboard.md, "
        "leaderboard.csv, leaderboard_pairs.csv, a section of report.html)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="of the bootstrap intervals and tests (default: 0)"
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="score cache (default: $NIGHTS_HOME/cache/scores.sqlite)",
    )
    options.add_quiet(parser)


def _audit(args) -> int:
    import torch

    from ..audit import agreement_table, run_audit

    result = run_audit(
        args.metric,
        root=args.root,
        split=args.split,
        variant=args.variant,
        min_votes=args.min_votes,
        limit=args.limit,
        out=args.out,
        jnd=args.jnd,
        cache=args.cache,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        device=args.device,
        dtype={"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype],
        precision=args.precision,
        backend=args.backend,
        fidelity_on=args.fidelity_on,
        progress=options.progress(args),
        leaderboard=args.leaderboard,
        seed=args.seed,
    )
    if not result.main_process:
        return 0
    print(agreement_table(result.summary))
    jnd = {
        name: entry["jnd_average_precision"]
        for name, entry in result.summary["metrics"].items()
        if "jnd_average_precision" in entry
    }
    if jnd:
        print("JND average precision: " + ", ".join(f"{k} {v:.3f}" for k, v in jnd.items()))
    if result.leaderboard is not None:
        print("\n" + result.leaderboard.to_markdown() + "\n")
    print("wrote " + ", ".join(str(path) for path in result.paths.values()))
    return 0
