"""Votes from other platforms, into one vote table.

The vote table is a DataFrame, one row per answer:

``task`` (triplet id, int), ``worker`` (str), ``label`` (``left`` or ``right``: the side of the
*stored* triplet the worker chose, display swaps already undone), ``rt_ms`` (response time or
null), ``source`` (file it came from).

Readers: MTurk batch results (legacy ``Answer.*`` fields or the crowd-HTML ``Answer.taskAnswers``
JSON), Label Studio pairwise JSON exports, and a plain CSV. Every file is outside input: any
file gives either a vote table or a :class:`VoteImportError` naming the file and the row (line,
task, annotation) and the value; nothing is returned from a file with any bad row.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pandas as pd

from .errors import VoteImportError

VOTE_COLUMNS = ("task", "worker", "label", "rt_ms", "source")
_SIDES = {"left": "left", "right": "right", "0": "left", "1": "right", "a": "left", "b": "right"}
_SWAPPED = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
_SWAPPED[""] = False  # no swapped column, or an empty cell: shown as stored
MAX_TASK_ID = 2**63 - 1  # ids are stored as int64


def _shown(value) -> str:
    """A value for an error message, cut short: a hostile cell may be megabytes long."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _side(value, where: str) -> str:
    side = _SIDES.get(str(value).strip().lower()) if isinstance(value, (str, int)) else None
    if side is None or isinstance(value, bool):
        raise VoteImportError(f"{where}: answer {_shown(value)} is not left/right (or 0/1)")
    return side


def _undo_swap(side: str, swapped, where: str) -> str:
    """The stored side of a displayed side: a swapped trial showed stored-right on the left."""
    flag = _SWAPPED.get(str(swapped).strip().lower()) if isinstance(swapped, (str, int)) else None
    if flag is None:
        raise VoteImportError(f"{where}: swapped {_shown(swapped)} is not true/false (or 1/0)")
    return ("right" if side == "left" else "left") if flag else side


def _number(value, where: str, what: str) -> float:
    if isinstance(value, bool):
        raise VoteImportError(f"{where}: {what} {_shown(value)} is not a number")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise VoteImportError(f"{where}: {what} {_shown(value)} is not a number") from None
    if not math.isfinite(number):
        raise VoteImportError(f"{where}: {what} {_shown(value)} is not a finite number")
    return number


def _task(value, where: str) -> int:
    number = _number(value, where, "triplet id")
    if number != int(number) or not 0 <= number <= MAX_TASK_ID:
        raise VoteImportError(
            f"{where}: triplet id {_shown(value)} is not a whole number from 0 to 2**63-1"
        )
    return int(number)


def _duration_ms(value, where: str, what: str, scale: float = 1.0) -> float | None:
    """A response time in ms from ``value`` (in units of ``scale`` ms); empty is None."""
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    number = _number(value, where, what)
    if number < 0:
        raise VoteImportError(f"{where}: {what} {_shown(value)} is negative")
    return scale * number


# The columns a plain CSV may name each field by, in order of preference.
TASK_NAMES = ("task", "triplet_id", "id")
WORKER_NAMES = ("worker", "worker_id", "WorkerId")
LABEL_NAMES = ("label", "choice", "answer")


def _frame(rows: list[dict], source: Path) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(VOTE_COLUMNS[:-1]))
    frame["source"] = source.name
    frame["rt_ms"] = frame["rt_ms"].astype("float64")
    return frame.astype({"task": "int64", "worker": "string", "label": "string"})


def _first(row: dict, *names: str):
    for name in names:
        if name in row and str(row[name]).strip() not in ("", "nan"):
            return row[name]
    return None


def _read_csv(path: Path) -> pd.DataFrame:
    """Every cell as text, or a VoteImportError naming the file."""
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise VoteImportError(f"{path}: empty file, expected a CSV with a header line") from None
    except UnicodeDecodeError as error:
        raise VoteImportError(
            f"{path}: not UTF-8 text (byte {error.start}); save it as UTF-8 CSV"
        ) from None
    except (pd.errors.ParserError, ValueError) as error:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else "unreadable"
        raise VoteImportError(f"{path}: not a readable CSV ({reason})") from None


def read_plain_csv(path: str | os.PathLike) -> pd.DataFrame:
    """A CSV with ``task`` (or ``triplet_id``/``id``), ``worker``, ``label`` (left/right, 0/1)
    and optionally ``rt_ms``, ``swapped`` (the display was swapped; the label is as shown) and
    ``kind``/``expected``/``server_ms`` (as ``nights annotate export`` writes them)."""
    path = Path(path)
    frame = _read_csv(path)
    needed = {"task": TASK_NAMES, "worker": WORKER_NAMES, "label": LABEL_NAMES}
    absent = [what for what, names in needed.items() if not set(names) & set(frame.columns)]
    if absent:
        columns = ", ".join(_shown(column) for column in frame.columns[:10])
        raise VoteImportError(
            f"{path}: line 1: no {' or '.join(absent)} column (columns found: {columns}); "
            f"expected e.g. task,worker,label"
        )
    rows, server_ms = [], []
    for number, row in enumerate(frame.to_dict("records"), start=2):
        where = f"{path}: line {number}"
        task = _first(row, *TASK_NAMES)
        worker = _first(row, *WORKER_NAMES)
        label = _first(row, *LABEL_NAMES)
        if task is None or worker is None or label is None:
            columns = ", ".join(_shown(column) for column in frame.columns[:10])
            raise VoteImportError(
                f"{where}: needs task, worker and label (columns found: {columns})"
            )
        rows.append(
            {
                "task": _task(task, where),
                "worker": str(worker),
                "label": _undo_swap(_side(label, where), row.get("swapped", ""), where),
                "rt_ms": _duration_ms(row.get("rt_ms"), where, "rt_ms"),
            }
        )
        server_ms.append(_duration_ms(row.get("server_ms"), where, "server_ms"))
    result = _frame(rows, path)
    for extra in ("kind", "expected"):  # kept from campaign exports, for quality checks
        if extra in frame.columns:
            result[extra] = frame[extra].replace("", None).to_numpy()
    if "server_ms" in frame.columns:
        result["server_ms"] = pd.Series(server_ms, dtype="float64").to_numpy()
    return result


def _mturk_answer(row: dict, where: str) -> str:
    if "Answer.taskAnswers" in row and str(row["Answer.taskAnswers"]).strip():
        try:
            answers = json.loads(row["Answer.taskAnswers"])
        except (ValueError, RecursionError) as error:
            reason = str(error)[:80] or "nested too deep"
            raise VoteImportError(f"{where}: Answer.taskAnswers is not JSON ({reason})") from None
        answer = answers[0] if isinstance(answers, list) and answers else answers
        choice = answer.get("choice") if isinstance(answer, dict) else None
        if isinstance(choice, dict):  # radio groups: {"left": true, "right": false}
            chosen = [side for side, on in choice.items() if on is True]
            choice = chosen[0] if len(chosen) == 1 else None
        if choice is None:
            raise VoteImportError(f"{where}: Answer.taskAnswers has no single 'choice'")
        return _side(choice, where)
    value = _first(row, "Answer.choice", "Answer.label", "Answer.answer")
    if value is None:
        raise VoteImportError(f"{where}: no Answer.choice or Answer.taskAnswers")
    return _side(value, where)


def read_mturk_csv(path: str | os.PathLike) -> pd.DataFrame:
    """An MTurk batch-results CSV (``WorkerId``, ``Input.*``, ``Answer.*``); rejected
    assignments are left out, ``Input.swapped`` undoes display swaps, ``WorkTimeInSeconds``
    becomes the response time."""
    path = Path(path)
    frame = _read_csv(path)
    missing = [c for c in ("WorkerId", "AssignmentStatus") if c not in frame.columns]
    if missing:
        raise VoteImportError(f"{path}: not an MTurk batch file (missing {', '.join(missing)})")
    rows = []
    for number, row in enumerate(frame.to_dict("records"), start=2):
        if row["AssignmentStatus"].strip().lower() == "rejected":
            continue
        where = f"{path}: line {number}"
        task = _first(row, "Input.triplet_id", "Input.id", "Input.task")
        if task is None:
            raise VoteImportError(f"{where}: no Input.triplet_id or Input.id")
        if not row["WorkerId"].strip():
            raise VoteImportError(f"{where}: empty WorkerId")
        side = _mturk_answer(row, where)
        rows.append(
            {
                "task": _task(task, where),
                "worker": row["WorkerId"],
                "label": _undo_swap(side, row.get("Input.swapped", ""), where),
                "rt_ms": _duration_ms(
                    row.get("WorkTimeInSeconds"), where, "WorkTimeInSeconds", scale=1000.0
                ),
            }
        )
    return _frame(rows, path)


def _expect(value, kind: type, what: str, where: str):
    """``value`` when it has the JSON type ``kind``; a VoteImportError otherwise."""
    if not isinstance(value, kind):
        name = {dict: "an object", list: "a list"}[kind]
        raise VoteImportError(f"{where}: {what} must be {name}, not {_shown(value)}")
    return value


def _label_studio_worker(annotation: dict, where: str) -> str:
    worker = annotation.get("completed_by")
    if isinstance(worker, dict):
        worker = worker.get("email", worker.get("id"))
    if isinstance(worker, bool) or not isinstance(worker, (str, int)) or str(worker) == "":
        raise VoteImportError(f"{where}: completed_by {_shown(worker)} names no annotator")
    return str(worker)


def read_label_studio_json(path: str | os.PathLike) -> pd.DataFrame:
    """A Label Studio JSON export of a ``<Pairwise>`` project: ``task.data`` holds the triplet
    id (``triplet_id`` or ``id``) and optionally ``swapped``; each annotation's pairwise result
    gives ``selected`` left/right, ``completed_by`` the worker, ``lead_time`` seconds."""
    path = Path(path)
    try:
        tasks = json.loads(path.read_bytes())
    except UnicodeDecodeError as error:
        raise VoteImportError(f"{path}: not UTF-8 text (byte {error.start})") from None
    except (ValueError, RecursionError) as error:
        reason = str(error)[:80] or "nested too deep"
        raise VoteImportError(f"{path}: not JSON ({reason})") from None
    _expect(tasks, list, "the export", str(path))
    rows = []
    for index, task in enumerate(tasks):
        where = f"{path}: task {index}"
        _expect(task, dict, "a task", where)
        data = _expect(task.get("data", {}), dict, "data", where)
        triplet = _first(data, "triplet_id", "id")
        if triplet is None:
            raise VoteImportError(f"{where}: data has no triplet_id or id")
        triplet = _task(triplet, where)
        for number, annotation in enumerate(
            _expect(task.get("annotations", []), list, "annotations", where)
        ):
            here = f"{where}, annotation {number}"
            _expect(annotation, dict, "an annotation", here)
            if annotation.get("was_cancelled"):
                continue
            results = [
                result
                for result in _expect(annotation.get("result", []), list, "result", here)
                if _expect(result, dict, "a result", here).get("type") == "pairwise"
            ]
            if len(results) != 1:
                raise VoteImportError(f"{here}: expected one pairwise result, found {len(results)}")
            value = _expect(results[0].get("value", {}), dict, "the pairwise value", here)
            rows.append(
                {
                    "task": triplet,
                    "worker": _label_studio_worker(annotation, here),
                    "label": _undo_swap(
                        _side(value.get("selected"), here), data.get("swapped", False), here
                    ),
                    "rt_ms": _duration_ms(
                        annotation.get("lead_time"), here, "lead_time", scale=1000.0
                    ),
                }
            )
    return _frame(rows, path)


READERS = {"csv": read_plain_csv, "mturk": read_mturk_csv, "label-studio": read_label_studio_json}


def read_votes(path: str | os.PathLike, format: str | None = None) -> pd.DataFrame:
    """Reads a votes file; ``format`` is ``csv``, ``mturk`` or ``label-studio`` (default: from
    the file: ``.json`` is Label Studio, a CSV with ``WorkerId`` MTurk, other CSVs plain).

    Raises:
        VoteImportError: the file is missing, unreadable or has a bad row (all named).

    Example::

        >>> from annotation import read_votes
        >>> votes = read_votes("Batch_123_batch_results.csv")    # doctest: +SKIP
        >>> votes.columns.tolist()                                # doctest: +SKIP
        ['task', 'worker', 'label', 'rt_ms', 'source']
    """
    path = Path(path)
    if not path.is_file():
        raise VoteImportError(f"{path}: no such file")
    if format is None:
        if path.suffix.lower() == ".json":
            format = "label-studio"
        else:
            with open(path, "rb") as handle:
                header = handle.readline()
            format = "mturk" if b"WorkerId" in header else "csv"
    if format not in READERS:
        raise VoteImportError(f"format must be one of {', '.join(READERS)}, not {format!r}")
    return READERS[format](path)
