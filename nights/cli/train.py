"""``nights train``: fine-tune DreamSim (``run``), read a run's figures (``report``), share the
result (``export``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import options

#: The options that set the config key of their name (any other key: --set KEY=VALUE).
_CONFIG_OPTIONS = (
    "out",
    "root",
    "variant",
    "method",
    "weights",
    "epochs",
    "batch_size",
    "lr",
    "labels",
    "seed",
    "mixed_precision",
    "gradient_accumulation",
    "num_workers",
    "device",
)


def add_commands(commands) -> None:
    """Adds ``train run``, ``train report`` and ``train export`` to ``nights``."""
    parser = options.command(
        commands,
        "train",
        _usage,
        "fine-tune DreamSim on triplets with votes; export and push the result",
        "run: fine-tune a DreamSim variant on any triplet table (the release, a split written "
        "by `nights filter` or `nights annotate aggregate --out`, Parquet or Hub), validating "
        "each epoch with the audit's 2AFC and testing the best epoch at the end; upstream's "
        "recipe by default. export: the best checkpoint as one merged safetensors file, and "
        "with --push-to-hub a Hugging Face model repository with a model card.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    run = actions.add_parser(
        "run",
        help="train (or --resume) a run",
        description="Train as CONFIG (YAML or TOML) says, with the options below and --set "
        "KEY=VALUE applied over it; without CONFIG, upstream's recipe (LoRA r=16 alpha=8 "
        "dropout 0.3 on qkv, Adam lr 3e-4 betas (0.5, 0.999), hinge margin 0.05, batch 16, 6 "
        "epochs, seed 1234; --method mlp: batch 512, 20 epochs) on the release's train split, "
        "validated on val and tested on test. The run folder (--out) gets RUN/epoch_N and "
        "RUN/best in the release layout, config.yaml, log.csv (every step), epochs.csv, "
        "report.html, result.json and audits/. Runs unchanged under torchrun and accelerate "
        "launch (one GPU per process, or CPU processes).",
    )
    run.set_defaults(run=_run, usage_error=run.error)
    run.add_argument("config", nargs="?", type=Path, help="a YAML or TOML config file")
    run.add_argument("--out", default=None, help="the run folder (default: nights-train/run)")
    run.add_argument(
        "--root",
        default=None,
        help="the data of train, val and test unless a section names its own "
        "(default: $NIGHTS_HOME, else the embedded sample)",
    )
    run.add_argument("--variant", default=None, help="a DreamSim variant (default: ensemble)")
    run.add_argument("--method", choices=("lora", "mlp"), default=None, help="(default: lora)")
    run.add_argument(
        "--weights", default=None, help="the variant's weight files (default: $DREAMSIM_HOME)"
    )
    run.add_argument("--epochs", type=int, default=None, help="(default: the method's recipe)")
    run.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="triplets per optimizer step, all processes together (default: the recipe's)",
    )
    run.add_argument("--lr", type=float, default=None, help="(default: 3e-4)")
    run.add_argument(
        "--labels",
        choices=("hard", "soft"),
        default=None,
        help="hard: the rounded vote share (upstream); soft: the vote share itself",
    )
    run.add_argument("--seed", type=int, default=None, help="(default: 1234)")
    run.add_argument(
        "--mixed-precision", choices=("no", "bf16", "fp16"), default=None, help="(default: no)"
    )
    run.add_argument(
        "--gradient-accumulation",
        type=int,
        default=None,
        metavar="N",
        help="micro-batches per step in each process, for memory (the result does not change)",
    )
    run.add_argument("--num-workers", type=int, default=None, help="(default: 2)")
    run.add_argument("--device", choices=("cpu",), default=None, help="cpu: ignore the GPUs")
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any config key (train.split=all, val=null, lora_r=8, ...); repeatable",
    )
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out where it stopped (with its own config.yaml unless "
        "CONFIG is given)",
    )
    options.add_quiet(run)

    report = actions.add_parser(
        "report",
        help="print a finished run's validation and test 2AFC",
        description="The validation 2AFC of every epoch (0: the starting model) and the test "
        "2AFC of the best one, with their bootstrap 95%% intervals, and where the run's "
        "checkpoint and HTML report are.",
    )
    report.set_defaults(run=_report, usage_error=report.error)
    report.add_argument("run_folder", type=Path, metavar="RUN", help="a finished run folder")

    export = actions.add_parser(
        "export",
        help="write the best checkpoint as one merged file; push to the Hub",
        description="--merged writes RUN/best as one safetensors file with LoRA merged "
        "(dreamsim(cache_dir=FILE, dreamsim_type=...) loads it). --push-to-hub OWNER/NAME "
        "uploads it (or, without --merged, the release-layout checkpoint that upstream's "
        "dreamsim loads) with a model card: config, data provenance, validation and test 2AFC "
        "with intervals. The token comes from HF_TOKEN or `hf auth login`.",
    )
    export.set_defaults(run=_export, usage_error=export.error)
    export.add_argument("run_folder", type=Path, metavar="RUN", help="a finished run folder")
    export.add_argument("--merged", action="store_true", help="write the merged safetensors")
    export.add_argument(
        "--out",
        type=Path,
        default=None,
        help="the merged file (default: RUN/export/dreamsim_VARIANT_merged.safetensors)",
    )
    export.add_argument("--push-to-hub", metavar="OWNER/NAME", default=None, help="upload")
    export.add_argument("--private", action="store_true", help="create the Hub repo private")


def _usage(args: argparse.Namespace) -> int:
    args.usage_error("choose an action: run, report or export")
    return 2


def _run(args: argparse.Namespace) -> int:
    from ..train import train
    from ..train.config import config_from_dict, merge_values, parse_overrides, read_config_file
    from ..train.engine import CONFIG_FILE

    options_given = {name: getattr(args, name) for name in _CONFIG_OPTIONS}
    options_given = {name: value for name, value in options_given.items() if value is not None}
    config_file = args.config
    if args.resume and config_file is None:
        config_file = Path(options_given.get("out") or "nights-train/run") / CONFIG_FILE
        if not config_file.is_file():
            args.usage_error(f"--resume: no run at {config_file.parent} (give --out RUN)")
    values = read_config_file(config_file) if config_file else {}
    values = merge_values(merge_values(values, options_given), parse_overrides(args.set))
    config = config_from_dict(values, str(config_file or "the options"))
    _print_result(train(config, resume=args.resume, progress=options.progress(args)))
    return 0


def _report(args: argparse.Namespace) -> int:
    from ..train import read_result

    _print_result(read_result(args.run_folder))
    return 0


def _print_result(result) -> None:
    for entry in result.epochs:
        val = entry.get("val")
        if val:
            low, high = val["ci95"]
            print(f"epoch {entry['epoch']}: val 2AFC {val['two_afc']:.3f} [{low:.3f}, {high:.3f}]")
    if result.test:
        low, high = result.test["ci95"]
        print(
            f"test 2AFC {result.test['two_afc']:.3f} [{low:.3f}, {high:.3f}] "
            f"({result.test['triplets']} triplets), best epoch {result.best_epoch}"
        )
    print(f"best checkpoint: {result.best}; report: {result.paths['report']}")


def _export(args: argparse.Namespace) -> int:
    from ..train import export_merged, push_run

    merged = None
    if args.merged:
        merged = export_merged(args.run_folder, args.out)
        print(f"wrote {merged}")
    elif args.out is not None:
        args.usage_error("--out names the merged file: add --merged")
    if args.push_to_hub:
        pushed = push_run(args.run_folder, args.push_to_hub, merged=merged, private=args.private)
        print(f"pushed to {pushed.url} (commit {pushed.commit})")
    elif not args.merged:
        args.usage_error("nothing to do: add --merged and/or --push-to-hub OWNER/NAME")
    return 0
