"""The ``nights`` command: ``nights COMMAND --help`` explains each one.

Commands come in groups, one module each, found through the ``nights.commands`` entry-point
group, so that ``nights`` knows no group by name: :mod:`nights.cli.table` (``sample``,
``info``, ``stats``, ``build``, ``verify``), :mod:`nights.cli.splits` (``filter``),
:mod:`nights.cli.download`, :mod:`nights.cli.audit`, :mod:`nights.cli.fiftyone` (``app``,
``export-fiftyone``), :mod:`nights.cli.publish` (``publish``) and, from the ``annotation``
package, ``annotate`` (:mod:`annotation.cli`).

Adding a group, e.g. ``nights train``:

1. Write the job as a library function that returns a result object (as
   :func:`nights.audit.run_audit` does); the command only turns options into its arguments and
   prints the result.
2. Write the command module (``nights/cli/train.py``, or ``yourpackage/cli.py``) with one
   function ``add_commands(commands)``: it adds its subparsers to ``commands`` (argparse's
   subparsers action) with :func:`nights.cli.options.command`, the shared options of
   :mod:`nights.cli.options` and its own; each subparser's ``run(args)`` returns the exit
   status. Import heavy libraries (torch, datasets, fiftyone) inside ``run``: every ``nights``
   invocation imports every group's module.
3. Declare it in ``pyproject.toml`` and reinstall (``pip install -e .``)::

       [project.entry-points."nights.commands"]
       train = "nights.cli.train:add_commands"

A :class:`~nights.errors.NightsError` (or ``FileNotFoundError``, ``FileExistsError``,
``ValueError``, a ``dreamsim`` error) raised by ``run`` is printed as one line,
``nights train: error: ...``, with exit status 2; ``args.usage_error(message)`` reports a
misuse of the options the same way.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from importlib.metadata import entry_points

from ..errors import NightsError

ENTRY_POINTS = "nights.commands"
EPILOG = """data location: --root, else $NIGHTS_HOME (default ~/.cache/nights). --root may be the
release folder (holding data.csv) or the folder above it.

examples:
  nights sample ./nights-sample               write the synthetic sample
  nights info --root ./nights-sample          what is there, rows per split
  nights filter --root ./nights-sample --min-votes 8 --out ./min8
  nights verify --root ./nights-sample
"""
logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """The ``nights`` parser, with the commands of every installed group."""
    parser = argparse.ArgumentParser(
        prog="nights",
        description="Get, inspect, audit and extend the NIGHTS dataset.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    groups = sorted(entry_points(group=ENTRY_POINTS), key=lambda entry: entry.name)
    if not groups:
        logger.warning(
            "nights: no command groups found: the package's entry points are only there once "
            "it is installed (pip install -e .)"
        )
    for group in groups:
        try:
            add_commands = group.load()
        except ImportError as error:  # a group whose optional libraries are absent
            logger.warning("nights: commands %r left out: %s", group.name, error)
            continue
        add_commands(commands)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """What a command reports as one line: our errors and bad input of the usual kinds."""
    errors: list[type[BaseException]] = [
        NightsError,
        FileExistsError,
        FileNotFoundError,
        ValueError,
    ]
    # Only code that has imported dreamsim can raise its errors: no import (and no torch) here.
    if "dreamsim.errors" in sys.modules:
        errors.append(sys.modules["dreamsim.errors"].DreamSimError)
    return tuple(errors)


def main(argv: list[str] | None = None) -> int:
    """Runs ``nights ARGV``; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.run(args)
    except _user_errors() as error:
        print(f"nights {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader left early (`nights info | head`): nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
