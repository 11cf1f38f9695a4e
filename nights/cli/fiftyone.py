"""The FiftyOne commands: ``app`` (browse a split) and ``export-fiftyone``."""

from __future__ import annotations

from pathlib import Path

from . import options


def add_commands(commands) -> None:
    """Adds ``app`` and ``export-fiftyone`` to ``nights``."""
    app = options.command(
        commands,
        "app",
        _app,
        "browse the triplets in the FiftyOne App",
        "Build (or update in place) a grouped FiftyOne dataset of a split, one group per "
        "triplet with ref/left/right slices, votes, the audit's distances, choices and tags, "
        "saved views (disagreements, label_noise_candidates, one per split), and launch the "
        "App.",
    )
    _add_dataset_options(app)
    app.add_argument("--port", type=int, default=5151, help="(default: %(default)s)")
    app.add_argument(
        "--remote", action="store_true", help="serve without opening a browser; print the URL"
    )
    app.add_argument(
        "--address",
        default="127.0.0.1",
        help="address to bind (default: %(default)s; 0.0.0.0 exposes it)",
    )

    export = options.command(
        commands,
        "export-fiftyone",
        _export,
        "write the FiftyOne dataset as a FiftyOneDataset folder, or push it to the Hub",
        "Export the dataset of a split (as `nights app` builds it) as a FiftyOneDataset folder "
        "that keeps the release's ref/NNN/... layout, and/or (--push) share it on the Hugging "
        "Face Hub through FiftyOne's Hub integration, so that "
        "fiftyone.utils.huggingface.load_from_hub opens it, groups and audit fields included.",
    )
    export.add_argument("out", type=Path, nargs="?", help="folder to write")
    options.add_overwrite(export)
    export.add_argument(
        "--push",
        metavar="OWNER/NAME",
        default=None,
        help="share it on the Hub (OWNER: the token's user; token from HF_TOKEN or "
        "`hf auth login`)",
    )
    export.add_argument("--private", action="store_true", help="create the Hub repo private")
    _add_dataset_options(export)


def _add_dataset_options(parser) -> None:
    options.add_root(parser)
    options.add_rows(parser, **options.TEST_VIEW)
    parser.add_argument(
        "--audit",
        type=Path,
        default=None,
        help="audit.parquet (default: nights-audit/SPLIT/audit.parquet when it exists)",
    )
    parser.add_argument(
        "--embeddings",
        default=None,
        metavar="METRIC",
        help="store this audited metric's embeddings, with PCA/t-SNE/UMAP plots and a "
        "similarity index",
    )
    parser.add_argument("--name", default=None, help="dataset name (default: nights-SPLIT)")
    parser.add_argument(
        "--rebuild", action="store_true", help="build the dataset again instead of updating it"
    )
    options.add_quiet(parser)


def _dataset(args):
    """The FiftyOne dataset of a split, with the split's audit when there is one."""
    from ..table import load_nights, release_or_sample
    from ..visualize import to_fiftyone

    root = release_or_sample(args.root)
    table = load_nights(
        args.split, root=root, min_votes=args.min_votes, progress=options.progress(args)
    )
    audit = args.audit
    default_audit = Path("nights-audit") / args.split / "audit.parquet"
    if audit is None and default_audit.exists():
        audit = default_audit
    if audit is None:
        print(
            f"no audit given and none at {default_audit}: showing votes only "
            f"(run `nights audit --split {args.split}` first for model fields)"
        )
    dataset = to_fiftyone(
        table,
        name=args.name or f"nights-{args.split}",
        audit=audit,
        embeddings=args.embeddings,
        overwrite=args.rebuild,
        progress=options.progress(args),
    )
    return dataset, root


def _app(args) -> int:
    dataset, _ = _dataset(args)
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


def _export(args) -> int:
    if args.out is None and args.push is None:
        args.usage_error("give OUT (a folder to export to), --push OWNER/NAME, or both")
    dataset, root = _dataset(args)
    if args.out is not None:
        import fiftyone as fo

        from ..table import resolve_source

        dataset.export(
            export_dir=str(args.out),
            dataset_type=fo.types.FiftyOneDataset,
            rel_dir=str(resolve_source(root, "nights").image_root),
            overwrite=args.overwrite,
        )
        print(
            f"exported {dataset.name} to {args.out} (FiftyOneDataset, media under data/ with "
            "the release's ref/NNN/... layout)"
        )
    if args.push is not None:
        from ..publish import push_fiftyone

        pushed = push_fiftyone(dataset, args.push, private=args.private)
        print(
            f"pushed {dataset.name} to {pushed.url}; open it with "
            f'fiftyone.utils.huggingface.load_from_hub("{args.push}")'
        )
    return 0
