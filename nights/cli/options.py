"""The options that several commands share, each defined here once with one help text.

A command module adds them with these functions, so that ``--root`` or ``--quiet`` read the same
in every ``--help``. The row selection (``--split``, ``--min-votes``) takes its default from the
command's purpose: the table tools (``stats``, ``filter``) see every row, the evaluation
commands (``audit``, ``app``) upstream's test view; ``--help`` prints the default.

Example::

    >>> import argparse
    >>> from nights.cli import options
    >>> parser = argparse.ArgumentParser(prog="nights demo")
    >>> options.add_rows(parser, split="test", min_votes=6)
    >>> options.add_quiet(parser)
    >>> args = parser.parse_args(["--split", "val", "--quiet"])
    >>> args.split, args.min_votes, options.progress(args)
    ('val', 6, False)
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from ..schema import BY_ORIGIN, SPLITS

#: The row selection of the evaluation commands: the test triplets with the vote filter of the
#: data's origin (upstream's votes >= 6 for the release: its published test numbers use it).
TEST_VIEW = {"split": "test", "min_votes": BY_ORIGIN}
#: The row selection of the tools that work on the whole table.
EVERY_ROW = {"split": "all", "min_votes": None}


def command(
    commands, name: str, run: Callable[[argparse.Namespace], int], summary: str, description: str
) -> argparse.ArgumentParser:
    """Adds the subcommand ``name`` that ``run(args) -> exit status`` carries out.

    ``args.usage_error(message)`` stops with a usage error (exit 2) naming the command.
    """
    parser = commands.add_parser(name, help=summary, description=description)
    parser.set_defaults(run=run, usage_error=parser.error)
    return parser


def add_root(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--root", type=Path, default=None, help="the NIGHTS folder (default: $NIGHTS_HOME)"
    )


def add_variant(parser: argparse.ArgumentParser, variants=("nights", "unfiltered")) -> None:
    parser.add_argument(
        "--variant", choices=variants, default=variants[0], help="which table (default: nights)"
    )


def add_rows(parser: argparse.ArgumentParser, split: str, min_votes: int | str | None) -> None:
    """``--split`` and ``--min-votes``: which rows of the table a command works on."""
    add_split(parser, split)
    parser.add_argument(
        "--min-votes",
        type=min_votes_value,
        default=min_votes,
        metavar="N",
        help="the rows with at least N votes; 'origin': 6 (upstream's view) for the release, "
        "the policy recorded in provenance.json for a split written by nights (default: "
        "%(default)s)",
    )


def min_votes_value(text: str) -> int | str:
    """``--min-votes``: a whole number, or ``origin``."""
    if text == BY_ORIGIN:
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a whole number nor {BY_ORIGIN!r}"
        ) from None


def add_split(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument(
        "--split",
        choices=SPLITS,
        default=default,
        help="the triplets of this split; test_imagenet and test_no_imagenet are the test "
        "triplets with and without is_imagenet (default: %(default)s)",
    )


def add_base_url(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--base-url", default=None, help="mirror URL (default: $NIGHTS_BASE_URL or upstream's host)"
    )


def add_limit(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--limit", type=int, default=None, metavar="N", help="the first N triplets only"
    )


def add_overwrite(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")


def add_quiet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def progress(args: argparse.Namespace) -> bool | None:
    """The ``progress`` argument of the library: False when ``--quiet``, else None (a bar when
    stderr is a terminal)."""
    return False if getattr(args, "quiet", False) else None
