"""Votes from other platforms, into one vote table.

The vote table is a DataFrame, one row per answer:

``task`` (triplet id, int), ``worker`` (str), ``label`` (``left`` or ``right``: the side of the
*stored* triplet the worker chose, display swaps already undone), ``rt_ms`` (response time or
null), ``source`` (file it came from).

Readers: MTurk batch results (legacy ``Answer.*`` fields or the crowd-HTML ``Answer.taskAnswers``
JSON), Label Studio pairwise JSON exports, and a plain CSV. A bad file raises
:class:`ImportError_` naming the row; nothing is returned from a file with any bad row.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from nights.errors import SchemaError

VOTE_COLUMNS = ("task", "worker", "label", "rt_ms", "source")
_SIDES = {"left": "left", "right": "right", "0": "left", "1": "right", "a": "left", "b": "right"}
_TRUE = {"true", "1", "yes"}


class VoteImportError(SchemaError):
    """A votes file that cannot be imported; the message names the row."""


def _side(value, where: str) -> str:
    side = _SIDES.get(str(value).strip().lower())
    if side is None:
        raise VoteImportError(f"{where}: answer {value!r} is not left/right (or 0/1)")
    return side


def _undo_swap(side: str, swapped) -> str:
    """The stored side of a displayed side: a swapped trial showed stored-right on the left."""
    if str(swapped).strip().lower() in _TRUE:
        return "right" if side == "left" else "left"
    return side


def _task(value, where: str) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise VoteImportError(f"{where}: triplet id {value!r} is not a number") from None
    if number != int(number):
        raise VoteImportError(f"{where}: triplet id {value!r} is not a whole number")
    return int(number)


def _frame(rows: list[dict], source: Path) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(VOTE_COLUMNS[:-1]))
    frame["source"] = source.name
    frame["rt_ms"] = pd.to_numeric(frame["rt_ms"], errors="coerce")
    return frame.astype({"task": "int64", "worker": "string", "label": "string"})


def _first(row: dict, *names: str):
    for name in names:
        if name in row and str(row[name]).strip() not in ("", "nan"):
            return row[name]
    return None


def read_plain_csv(path: str | os.PathLike) -> pd.DataFrame:
    """A CSV with ``task`` (or ``triplet_id``/``id``), ``worker``, ``label`` (left/right, 0/1)
    and optionally ``rt_ms``, ``swapped`` (the display was swapped; the label is as shown) and
    ``kind``/``expected`` (as ``nights annotate export`` writes them)."""
    path = Path(path)
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    rows = []
    for number, row in enumerate(frame.to_dict("records"), start=2):
        where = f"{path}: line {number}"
        task = _first(row, "task", "triplet_id", "id")
        worker = _first(row, "worker", "worker_id", "WorkerId")
        label = _first(row, "label", "choice", "answer")
        if task is None or worker is None or label is None:
            raise VoteImportError(
                f"{where}: needs task, worker and label (columns found: {', '.join(frame.columns)})"
            )
        side = _undo_swap(_side(label, where), row.get("swapped", "false"))
        rows.append(
            {
                "task": _task(task, where),
                "worker": str(worker),
                "label": side,
                "rt_ms": row.get("rt_ms"),
            }
        )
    result = _frame(rows, path)
    for extra in ("kind", "expected"):  # kept from campaign exports, for quality checks
        if extra in frame.columns:
            result[extra] = frame[extra].replace("", None).to_numpy()
    return result


def _mturk_answer(row: dict, where: str) -> str:
    if "Answer.taskAnswers" in row and str(row["Answer.taskAnswers"]).strip():
        try:
            answers = json.loads(row["Answer.taskAnswers"])
        except json.JSONDecodeError as error:
            raise VoteImportError(f"{where}: Answer.taskAnswers is not JSON ({error})") from None
        answer = answers[0] if isinstance(answers, list) and answers else answers
        choice = answer.get("choice") if isinstance(answer, dict) else None
        if isinstance(choice, dict):  # radio groups: {"left": true, "right": false}
            chosen = [side for side, on in choice.items() if on]
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
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
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
        side = _undo_swap(_mturk_answer(row, where), row.get("Input.swapped", "false"))
        seconds = pd.to_numeric(row.get("WorkTimeInSeconds"), errors="coerce")
        rows.append(
            {
                "task": _task(task, where),
                "worker": row["WorkerId"],
                "label": side,
                "rt_ms": None if pd.isna(seconds) else 1000 * float(seconds),
            }
        )
    return _frame(rows, path)


def read_label_studio_json(path: str | os.PathLike) -> pd.DataFrame:
    """A Label Studio JSON export of a ``<Pairwise>`` project: ``task.data`` holds the triplet
    id (``triplet_id`` or ``id``) and optionally ``swapped``; each annotation's pairwise result
    gives ``selected`` left/right, ``completed_by`` the worker, ``lead_time`` seconds."""
    path = Path(path)
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise VoteImportError(f"{path}: not JSON ({error})") from None
    if not isinstance(tasks, list):
        raise VoteImportError(f"{path}: expected a list of tasks")
    rows = []
    for index, task in enumerate(tasks):
        where = f"{path}: task {index}"
        data = task.get("data", {}) if isinstance(task, dict) else {}
        triplet = _first(data, "triplet_id", "id")
        if triplet is None:
            raise VoteImportError(f"{where}: data has no triplet_id or id")
        for number, annotation in enumerate(task.get("annotations", [])):
            if annotation.get("was_cancelled"):
                continue
            results = [r for r in annotation.get("result", []) if r.get("type") == "pairwise"]
            if len(results) != 1:
                raise VoteImportError(
                    f"{where}, annotation {number}: expected one pairwise "
                    f"result, found {len(results)}"
                )
            selected = results[0].get("value", {}).get("selected")
            worker = annotation.get("completed_by")
            worker = worker.get("email", worker.get("id")) if isinstance(worker, dict) else worker
            lead = annotation.get("lead_time")
            rows.append(
                {
                    "task": _task(triplet, where),
                    "worker": str(worker),
                    "label": _undo_swap(
                        _side(selected, f"{where}, annotation {number}"), data.get("swapped", False)
                    ),
                    "rt_ms": None if lead is None else 1000 * float(lead),
                }
            )
    return _frame(rows, path)


READERS = {"csv": read_plain_csv, "mturk": read_mturk_csv, "label-studio": read_label_studio_json}


def read_votes(path: str | os.PathLike, format: str | None = None) -> pd.DataFrame:
    """Reads a votes file; ``format`` is ``csv``, ``mturk`` or ``label-studio`` (default: from
    the file: ``.json`` is Label Studio, a CSV with ``WorkerId`` MTurk, other CSVs plain)."""
    path = Path(path)
    if not path.is_file():
        raise VoteImportError(f"{path}: no such file")
    if format is None:
        if path.suffix.lower() == ".json":
            format = "label-studio"
        else:
            header = path.read_text(encoding="utf-8").split("\n", 1)[0]
            format = "mturk" if "WorkerId" in header else "csv"
    if format not in READERS:
        raise ValueError(f"format must be one of {', '.join(READERS)}, not {format!r}")
    return READERS[format](path)
