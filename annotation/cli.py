"""``nights annotate``: campaigns, the collection app, imported and aggregated votes.

Registered in the ``nights.commands`` entry-point group (see :mod:`nights.cli`), so that
``nights`` itself never imports ``annotation``. Each action is a subcommand with only its own
options: ``nights annotate create|serve|status|plan|export|release|import|aggregate ...``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from nights._files import atomic_path
from nights.cli import options

CSV_OUT = "CSV file to write (default: standard output)"


def add_commands(commands) -> None:
    """Adds ``annotate`` and its subcommands to ``nights``."""
    annotate = commands.add_parser(
        "annotate",
        help="collect, import and aggregate new judgments",
        description="Campaigns of 2AFC (and JND) trials over a split, the web app that "
        "collects them, votes imported from MTurk, Label Studio or CSV, and aggregation into "
        "a new split with provenance. `nights annotate ACTION --help` explains each action.",
    )
    actions = annotate.add_subparsers(dest="action", required=True, metavar="ACTION")

    create = _campaign_action(
        actions,
        "create",
        _create,
        "a campaign database of 2AFC (and --jnd) trials from a split",
        "Write a campaign database (one SQLite file) with a 2AFC trial per triplet of the "
        "split, sentinels, practice and repeated trials, and JND trials with --jnd.",
    )
    options.add_root(create)
    options.add_rows(create, split="test", min_votes=None)
    options.add_limit(create)
    create.add_argument("--trials-per-participant", type=int, default=20)
    create.add_argument("--votes-per-trial", type=int, default=5)
    create.add_argument("--sentinel-rate", type=float, default=0.1)
    repeats = "trials shown twice to each participant (self-consistency)"
    create.add_argument("--repeats", type=int, default=2, help=repeats)
    create.add_argument(
        "--policy",
        default="target",
        help="which triplets still need votes: target (--votes-per-trial each), nights (while "
        "unanimous) or beta (Beta-binomial stopping); default: %(default)s",
    )
    create.add_argument(
        "--time-limit",
        type=float,
        default=60,
        metavar="MINUTES",
        help="how long a participant holds their trials; set it to the study's maximum time "
        "(default: %(default)s); unanswered trials then go back to the pool",
    )
    create.add_argument(
        "--image-root",
        type=Path,
        default=None,
        help="the folder the table's image paths are under (default: the table's own)",
    )
    create.add_argument("--jnd", action="store_true", help="also JND trials")
    create.add_argument("--seed", type=int, default=0)
    create.add_argument(
        "--completion-url", default=None, help="where participants go when done (e.g. Prolific's)"
    )
    options.add_quiet(create)

    serve = _campaign_action(
        actions, "serve", _serve, "the collection web app", "Serve a campaign to participants."
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--workers", type=int, default=1, help="server processes (default: %(default)s)"
    )

    _campaign_action(
        actions, "status", _status, "a campaign's progress", "Participants, votes, trials."
    )
    plan = _campaign_action(
        actions,
        "plan",
        _plan,
        "the triplets the campaign's policy still wants votes for",
        "Per 2AFC triplet: its votes so far and whether the campaign's policy asks for more.",
    )
    _add_out(plan, CSV_OUT)
    export = _campaign_action(
        actions, "export", _export, "the votes of a campaign", "The campaign's votes as CSV."
    )
    _add_out(export, CSV_OUT)
    release = _campaign_action(
        actions,
        "release",
        _release,
        "give a participant's unanswered trials back to the pool",
        "Give the unanswered trials of a participant who returned the study back to the pool.",
    )
    release.add_argument("worker", help="the participant id who returned the study")

    imported = options.command(
        actions,
        "import",
        _import,
        "votes from MTurk, Label Studio or CSV as one vote table",
        "Read votes from MTurk batch results, Label Studio exports or CSV into one vote table.",
    )
    _add_votes(imported)
    _add_out(imported, CSV_OUT)

    aggregate = options.command(
        actions,
        "aggregate",
        _aggregate,
        "per-triplet votes and, with --out, a new split",
        "Aggregate votes per triplet (majority, dawid_skene, glad), workers failing quality "
        "checks left out; with --out, write the triplets with their new votes as a split.",
    )
    _add_votes(aggregate)
    aggregate.add_argument(
        "--method", choices=("majority", "dawid_skene", "glad"), default="majority"
    )
    aggregate.add_argument(
        "--min-rt-ms",
        type=float,
        default=None,
        help="exclude workers whose median response is faster",
    )
    options.add_root(aggregate)
    _add_out(aggregate, "folder of the new split (default: the votes per triplet, as CSV)")
    options.add_quiet(aggregate)


def _campaign_action(actions, name: str, run, summary: str, description: str):
    """An action on one campaign: its first argument is the campaign's file."""
    parser = options.command(actions, name, run, summary, description)
    parser.add_argument("campaign", type=Path, help="the campaign's .sqlite file")
    return parser


def _add_out(parser, what: str) -> None:
    parser.add_argument("--out", type=Path, default=None, help=what)


def _add_votes(parser) -> None:
    parser.add_argument("--votes", type=Path, action="append", required=True, help="repeatable")
    parser.add_argument(
        "--format",
        choices=("csv", "mturk", "label-studio"),
        default=None,
        help="votes file format (default: guessed)",
    )


def _create(args) -> int:
    from nights.table import load_nights, release_or_sample

    from .campaign import create_campaign

    table = load_nights(
        args.split,
        root=release_or_sample(args.root),
        min_votes=args.min_votes,
        progress=options.progress(args),
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


def _serve(args) -> int:
    from .campaign import CampaignStore
    from .server import serve

    if args.workers < 1:
        args.usage_error("--workers must be at least 1")
    CampaignStore(args.campaign)  # a missing campaign fails before "serving" is printed
    print(f"serving {args.campaign} on http://{args.host}:{args.port}/?PROLIFIC_PID=...")
    serve(args.campaign, host=args.host, port=args.port, workers=args.workers)
    return 0


def _status(args) -> int:
    from .campaign import CampaignStore

    print(json.dumps(CampaignStore(args.campaign).progress(), indent=2))
    return 0


def _csv(frame, out, **options) -> None:
    """To stdout, or to ``out`` through a temporary file: a failed write keeps the old one."""
    if out is None:
        return frame.to_csv(sys.stdout, **options)
    with atomic_path(Path(out)) as temporary:
        frame.to_csv(temporary, **options)


def _plan(args) -> int:
    from .campaign import CampaignStore, plan_campaign

    store = CampaignStore(args.campaign)
    planned = plan_campaign(store)
    _csv(planned, args.out)
    print(
        f"{int(planned['needs_more'].sum())} of {len(planned)} triplets need more votes "
        f"({store.settings.get('policy', 'target')} policy)",
        file=sys.stderr,
    )
    return 0


def _export(args) -> int:
    from .campaign import CampaignStore

    _csv(CampaignStore(args.campaign).votes(), args.out, index=False)
    return 0


def _release(args) -> int:
    from .campaign import CampaignStore

    freed = CampaignStore(args.campaign).release(args.worker)
    print(f"released {args.worker}: {freed} unanswered trial(s) back in the pool")
    return 0


def _read_all_votes(args):
    import pandas as pd

    from .importers import read_votes

    return pd.concat([read_votes(path, args.format) for path in args.votes], ignore_index=True)


def _import(args) -> int:
    votes = _read_all_votes(args)
    _csv(votes, args.out, index=False)
    print(
        f"{len(votes)} votes from {votes['worker'].nunique()} workers on "
        f"{votes['task'].nunique()} triplets",
        file=sys.stderr,
    )
    return 0


def _aggregate(args) -> int:
    from .aggregate import aggregate, keep_qualified_workers, krippendorff_alpha, merge_into_split

    votes, flagged = keep_qualified_workers(_read_all_votes(args), args.min_rt_ms)
    if len(flagged):
        print(
            f"excluded {len(flagged)} worker(s) failing quality checks: "
            + ", ".join(f"{w} ({flagged.loc[w, 'reasons']})" for w in flagged.index[:10]),
            file=sys.stderr,
        )
    per_triplet = aggregate(votes, method=args.method)
    print(
        f"{len(per_triplet)} triplets, {len(votes)} votes; Krippendorff's alpha "
        f"{krippendorff_alpha(votes):.3f}",
        file=sys.stderr,
    )
    if not args.out:
        per_triplet.to_csv(sys.stdout)
        return 0
    from nights.table import load_nights, release_or_sample

    table = load_nights(
        "all",
        root=release_or_sample(args.root),
        min_votes=None,
        progress=options.progress(args),
    )
    merge_into_split(table, per_triplet, args.out, note=f"annotation: {args.method}")
    print(f"wrote the new split to {args.out}", file=sys.stderr)
    return 0
