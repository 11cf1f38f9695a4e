"""The NIGHTS CSV files, read by column name and validated row by row.

``data.csv`` (the 20k release) has a known header and is read strictly: every column, every
value, and a :class:`~nights.errors.SchemaError` that lists every bad place (file, line, column,
value) rather than the first one. ``nights_raw.csv`` (the unfiltered ~100k set) and
``jnd_votes.csv`` have no published schema: their readers map the column names they know, keep
the columns they do not, and fail with the list of columns found when a required one is missing.

Example::

    >>> from nights.schema import read_data_csv
    >>> frame = read_data_csv(sample_root / "nights" / "data.csv")
    >>> frame.dtypes["is_imagenet"], frame.dtypes["left_vote"]
    (dtype('bool'), dtype('float64'))
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from .errors import ArgumentError, SchemaError

if TYPE_CHECKING:  # pandas loads with the first file read: `nights --help` needs none of it
    import pandas as pd

DATA_CSV_COLUMNS = (
    "id",
    "left_vote",
    "right_vote",
    "votes",
    "ref_path",
    "left_path",
    "right_path",
    "split",
    "is_imagenet",
    "prompt",
)
#: The values of the ``split`` column.
SPLIT_VALUES = ("train", "val", "test")
#: The splits a table can be cut into (``load_nights(split=...)``, ``--split``): the column's
#: values, upstream's ``test_imagenet`` / ``test_no_imagenet`` and ``all``.
SPLITS = (*SPLIT_VALUES, "test_imagenet", "test_no_imagenet", "all")
JND_COLUMNS = ("id", "ref_path", "distort_path", "same", "votes")
#: The image columns of a triplet table (each with a ``*_path`` column: the CSV's path).
IMAGE_COLUMNS = ("ref", "left", "right")
#: The image columns of a JND table.
JND_IMAGE_COLUMNS = ("ref", "distort")
#: The columns of a triplet table that carry the votes (no image).
VOTE_COLUMNS = ("id", "left_vote", "right_vote", "votes", "split", "is_imagenet", "prompt")

_MAX_REPORTED = 25
_TRUE = {"true", "1", "yes", "y", "t", "1.0"}
_FALSE = {"false", "0", "no", "n", "f", "0.0"}


# -- value parsers: each takes the cell text and returns a value or raises ValueError(reason) --


def parse_bool(text: str) -> bool:
    """``True/False``, ``true/false``, ``1/0``, ``yes/no`` (any case) to a bool."""
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError("is not a boolean (expected True/False, true/false, 1/0 or yes/no)")


def parse_int(text: str) -> int:
    """An integer written ``6`` or ``6.0``."""
    try:
        number = float(text)
    except ValueError:
        raise ValueError("is not a number") from None
    if not math.isfinite(number) or number != int(number):
        raise ValueError("is not a whole number")
    return int(number)


def parse_count(text: str) -> int:
    """A vote count: a whole number >= 0."""
    count = parse_int(text)
    if count < 0:
        raise ValueError("is negative")
    return count


def parse_fraction(text: str) -> float:
    """A vote fraction in [0, 1], written ``1``, ``1.0`` or ``0.25``."""
    try:
        number = float(text)
    except ValueError:
        raise ValueError("is not a number") from None
    if not 0.0 <= number <= 1.0:  # also rejects nan
        raise ValueError("is not a fraction between 0 and 1")
    return number


def parse_relative_path(text: str) -> str:
    """A path relative to the NIGHTS root, kept exactly as written (``ref/000/006.png``)."""
    if not text.strip():
        raise ValueError("is empty")
    path = PurePosixPath(text.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or re.match(r"^[A-Za-z]:", text):
        raise ValueError("must be a path relative to the NIGHTS folder, without '..'")
    return text


def parse_split(text: str) -> str:
    if text not in SPLIT_VALUES:
        raise ValueError(f"is not a split (expected one of {', '.join(SPLIT_VALUES)})")
    return text


def split_mask(split: str, splits, is_imagenet):
    """Which rows belong to ``split`` (one of :data:`SPLITS`), as a boolean array, from the
    ``split`` and ``is_imagenet`` columns: ``test_imagenet`` / ``test_no_imagenet`` are the
    test rows with and without ``is_imagenet`` (a null counts as without).

    Example::

        >>> split_mask("test_imagenet", ["test", "train", "test"], [True, True, None]).tolist()
        [True, False, False]
    """
    import numpy as np

    if split not in SPLITS:
        raise ArgumentError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    splits = np.asarray(splits)
    if split == "all":
        return np.ones(len(splits), dtype=bool)
    base = "test" if split.startswith("test") else split
    mask = splits == base
    if split != base:
        imagenet = np.asarray(is_imagenet) == True  # noqa: E712 (nulls count as False)
        mask &= imagenet if split == "test_imagenet" else ~imagenet
    return mask


def parse_text(text: str) -> str:
    return text


DATA_CSV_PARSERS: dict[str, Callable[[str], object]] = {
    "id": parse_int,
    "left_vote": parse_fraction,
    "right_vote": parse_fraction,
    "votes": parse_count,
    "ref_path": parse_relative_path,
    "left_path": parse_relative_path,
    "right_path": parse_relative_path,
    "split": parse_split,
    "is_imagenet": parse_bool,
    "prompt": parse_text,
}


class _Problems:
    """Collects bad cells so one error can list all of them."""

    def __init__(self, path: Path):
        self.path = path
        self.items: list[str] = []
        self.count = 0

    def add(self, line: int, message: str) -> None:
        self.count += 1
        if len(self.items) < _MAX_REPORTED:
            self.items.append(f"  line {line}: {message}")

    def raise_if_any(self, what: str) -> None:
        if not self.count:
            return
        more = self.count - len(self.items)
        tail = f"\n  ... and {more} more" if more > 0 else ""
        raise SchemaError(
            f"{self.path}: {self.count} problem(s) in {what}:\n" + "\n".join(self.items) + tail
        )


def _rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """Yields ``(line_number, fields)``; line 1 is the header. Quoting errors become SchemaError."""
    try:
        handle = open(path, newline="", encoding="utf-8-sig")  # noqa: SIM115 (closed below)
    except FileNotFoundError:
        raise SchemaError(f"{path}: file not found") from None
    with handle:
        reader = csv.reader(handle, strict=True)
        line = 1
        try:
            for fields in reader:
                yield line, fields
                line = reader.line_num + 1
        except csv.Error as error:
            raise SchemaError(
                f"{path}: line {reader.line_num}: malformed CSV ({error}); "
                "check for an unbalanced quote in a prompt"
            ) from None
        except UnicodeDecodeError as error:
            raise SchemaError(f"{path}: not UTF-8 text ({error})") from None


def _data_rows(rows, width: int, problems: _Problems) -> Iterator[tuple[int, list[str]]]:
    """The non-blank rows with as many fields as the header; others are reported."""
    for line, fields in rows:
        if not fields or fields == [""]:
            continue
        if len(fields) != width:
            problems.add(line, f"{len(fields)} fields where the header has {width}")
            continue
        yield line, fields


def _read_header(path: Path, rows: Iterator[tuple[int, list[str]]]) -> list[str]:
    try:
        _, header = next(rows)
    except StopIteration:
        raise SchemaError(f"{path}: the file is empty (expected a header line)") from None
    header = [name.strip() for name in header]
    if len(header) == 1:
        for delimiter, name in ((";", "semicolon"), ("\t", "tab"), ("|", "pipe")):
            if delimiter in header[0]:
                raise SchemaError(
                    f"{path}: line 1 is {name}-separated; NIGHTS CSV files are comma-separated"
                )
    return header


def read_data_csv(path: str | os.PathLike, *, keep_extra_columns: bool = False) -> pd.DataFrame:
    """Reads and validates a NIGHTS ``data.csv``.

    Args:
        path: the CSV file.
        keep_extra_columns: keep columns beyond the ten of the release (as text) instead of
            refusing the file.

    Returns:
        A DataFrame with the ten columns in release order and typed values: ``id`` and
        ``votes`` int64, the vote fractions float64, ``is_imagenet`` bool, the rest str.

    Raises:
        SchemaError: the file is missing, empty, not comma-separated, lacks a column, has an
            unexpected one, repeats an id, or holds a bad value; the message lists every
            problem with its line and column.
    """
    path = Path(path)
    rows = _rows(path)
    header = _read_header(path, rows)
    missing = [name for name in DATA_CSV_COLUMNS if name not in header]
    extra = [name for name in header if name not in DATA_CSV_COLUMNS]
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if missing or duplicated or (extra and not keep_extra_columns):
        parts = []
        if missing:
            parts.append(f"missing column(s): {', '.join(missing)}")
        if extra and not keep_extra_columns:
            parts.append(f"unexpected column(s): {', '.join(extra)}")
        if duplicated:
            parts.append(f"repeated column(s): {', '.join(duplicated)}")
        raise SchemaError(
            f"{path}: line 1: {'; '.join(parts)}. Expected the header {','.join(DATA_CSV_COLUMNS)}"
        )
    position = {name: header.index(name) for name in header}
    columns: dict[str, list] = {name: [] for name in header}
    problems = _Problems(path)
    seen_ids: dict[int, int] = {}
    for line, fields in _data_rows(rows, len(header), problems):
        row: dict[str, object] = {}
        for name in header:
            text = fields[position[name]]
            parser = DATA_CSV_PARSERS.get(name, parse_text)
            try:
                row[name] = parser(text.strip() if parser is not parse_text else text)
            except ValueError as reason:
                problems.add(line, f"column '{name}': {text!r} {reason}")
        if len(row) != len(header):
            continue
        if abs(row["left_vote"] + row["right_vote"] - 1.0) > 1e-4:
            problems.add(
                line,
                f"columns 'left_vote' and 'right_vote': {row['left_vote']} + "
                f"{row['right_vote']} does not add up to 1",
            )
            continue
        if row["id"] in seen_ids:
            problems.add(
                line, f"column 'id': {row['id']} repeats the id of line {seen_ids[row['id']]}"
            )
            continue
        seen_ids[row["id"]] = line
        for name in header:
            columns[name].append(row[name])
    problems.raise_if_any("data.csv")
    if not columns["id"]:
        raise SchemaError(f"{path}: the header is there but there are no rows")
    import pandas as pd

    frame = pd.DataFrame(columns)
    frame = frame[list(DATA_CSV_COLUMNS) + [c for c in header if c not in DATA_CSV_COLUMNS]]
    return frame.astype(
        {
            "id": "int64",
            "votes": "int64",
            "left_vote": "float64",
            "right_vote": "float64",
            "is_imagenet": "bool",
        }
    )


def arrow_features(variant: str, extra_columns=()):
    """The ``datasets.Features`` of a built table: ``id``, the image columns, the CSV's typed
    columns (JND: ``same, votes``), the paths as written, then ``extra_columns`` (the unknown
    columns of a tolerant read) as strings.

    Example::

        >>> list(arrow_features("jnd"))
        ['id', 'ref', 'distort', 'same', 'votes', 'ref_path', 'distort_path']
    """
    from datasets import Features, Image, Value

    if variant == "jnd":
        images, typed = JND_IMAGE_COLUMNS, {"same": "float64", "votes": "int64"}
    else:
        images = IMAGE_COLUMNS
        typed = {
            "left_vote": "float64",
            "right_vote": "float64",
            "votes": "int64",
            "split": "string",
            "is_imagenet": "bool",
            "prompt": "string",
        }
    fields = {
        "id": Value("int64"),
        **{name: Image() for name in images},
        **{name: Value(dtype) for name, dtype in typed.items()},
        **{f"{name}_path": Value("string") for name in images},
    }
    for name in extra_columns:
        fields.setdefault(name, Value("string"))
    return Features(fields)


# -- tolerant readers for files whose schema is not published --

# Known spellings of each column, compared after lower-casing and turning spaces/dashes into _.
RAW_ALIASES: dict[str, tuple[str, ...]] = {
    "id": ("id", "triplet_id", "idx"),
    "left_vote": ("left_vote", "left_votes", "vote_left", "left_frac", "left_fraction", "p_left"),
    "right_vote": (
        "right_vote",
        "right_votes",
        "vote_right",
        "right_frac",
        "right_fraction",
        "p_right",
        "p",
    ),
    "votes": ("votes", "num_votes", "n_votes", "vote_count", "total_votes", "count"),
    "ref_path": ("ref_path", "ref", "reference", "ref_img", "reference_path", "ref_image"),
    "left_path": ("left_path", "left", "left_img", "left_image", "distort_0", "img0", "image_0"),
    "right_path": (
        "right_path",
        "right",
        "right_img",
        "right_image",
        "distort_1",
        "img1",
        "image_1",
    ),
    "split": ("split",),
    "is_imagenet": ("is_imagenet", "imagenet"),
    "prompt": ("prompt", "category", "caption", "text"),
}
JND_ALIASES: dict[str, tuple[str, ...]] = {
    "id": ("id", "triplet_id", "idx"),
    "ref_path": RAW_ALIASES["ref_path"],
    "distort_path": (
        "distort_path",
        "distort",
        "distortion",
        "distortion_path",
        "distorted_path",
        "img_path",
        "image_path",
        "path",
    ),
    "left_path": RAW_ALIASES["left_path"],
    "right_path": RAW_ALIASES["right_path"],
    "same": ("same", "same_vote", "same_frac", "same_fraction", "p_same", "frac_same"),
    "left_same": ("left_same", "same_left", "left_same_vote"),
    "right_same": ("right_same", "same_right", "right_same_vote"),
    "response": ("response", "answer", "judgment", "judgement", "label"),
    "votes": RAW_ALIASES["votes"],
}
_PARSERS: dict[str, Callable[[str], object]] = {
    **DATA_CSV_PARSERS,
    "split": parse_text,
    "distort_path": parse_relative_path,
    "same": parse_fraction,
    "left_same": parse_fraction,
    "right_same": parse_fraction,
    "response": parse_text,
}


def _normalise(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def _map_columns(header: list[str], aliases: dict[str, tuple[str, ...]]) -> dict[str, str]:
    """Maps each known canonical name to the header column that spells it (first match)."""
    by_normalised = {_normalise(name): name for name in reversed(header)}
    mapping = {}
    for canonical, spellings in aliases.items():
        for spelling in spellings:
            if spelling in by_normalised and by_normalised[spelling] not in mapping.values():
                mapping[canonical] = by_normalised[spelling]
                break
    return mapping


def _read_tolerant(
    path: Path, aliases: dict[str, tuple[str, ...]], what: str, required: set[str]
) -> tuple[pd.DataFrame, list[str]]:
    """Reads a CSV, renames known columns to canonical names, parses them, keeps the others.

    An empty cell of a known column is a null, except in the ``required`` columns (a bad row).
    Returns the frame (with a ``_line`` column) and the header as found.
    """
    rows = _rows(path)
    header = _read_header(path, rows)
    mapping = _map_columns(header, aliases)
    renamed = {source: canonical for canonical, source in mapping.items()}
    names = [renamed.get(name, name) for name in header]
    repeated = sorted({name for name in names if names.count(name) > 1 or name == "_line"})
    if repeated:
        raise SchemaError(
            f"{path}: line 1: repeated column(s): {', '.join(repeated)} (after reading "
            f"known spellings as NIGHTS names); columns found: {', '.join(header)}"
        )
    columns: dict[str, list] = {name: [] for name in names}
    lines: list[int] = []
    problems = _Problems(path)
    for line, fields in _data_rows(rows, len(header), problems):
        parsed = []
        for name, text in zip(names, fields):
            parser = _PARSERS.get(name) if name in mapping else None
            if parser is not None and name in required and not text.strip():
                problems.add(line, f"column '{mapping[name]}': is empty")
                parsed = None
                break
            if parser is None or parser is parse_text:
                parsed.append(text)
            elif not text.strip():
                parsed.append(None)
            else:
                try:
                    parsed.append(parser(text.strip()))
                except ValueError as reason:
                    problems.add(line, f"column '{mapping[name]}': {text!r} {reason}")
                    parsed = None
                    break
        if parsed is None:
            continue
        for name, value in zip(names, parsed):
            columns[name].append(value)
        lines.append(line)
    problems.raise_if_any(what)
    if not lines:
        raise SchemaError(f"{path}: the header is there but there are no rows")
    import pandas as pd

    frame = pd.DataFrame(columns)
    frame["_line"] = lines
    return frame, header


def _require(path: Path, frame: pd.DataFrame, header: list[str], groups: list[tuple[str, ...]]):
    """Each group is a set of alternatives: one of them must be present."""
    absent = [group for group in groups if not any(name in frame.columns for name in group)]
    if absent:
        wanted = "; ".join(" or ".join(group) for group in absent)
        raise SchemaError(
            f"{path}: line 1: required column(s) not found: {wanted}. "
            f"Columns found: {', '.join(header)}. Rename them to NIGHTS names "
            f"(see nights.schema.RAW_ALIASES / JND_ALIASES for the spellings understood)."
        )


def read_raw_csv(path: str | os.PathLike) -> pd.DataFrame:
    """Reads the unfiltered set's ``nights_raw.csv`` (schema unpublished) tolerantly.

    Known columns (see :data:`RAW_ALIASES`) are renamed to the ``data.csv`` names and typed;
    unknown columns are kept as text. Required: the three paths and one vote fraction. A
    missing ``id`` becomes the row number (0-based), a missing ``left_vote``/``right_vote`` the
    complement of the other, a missing ``votes``, ``split``, ``is_imagenet`` or ``prompt`` a null.

    Raises:
        SchemaError: a required column is missing (the message lists the columns found) or a
            known column holds a bad value (with its line).
    """
    path = Path(path)
    frame, header = _read_tolerant(
        path, RAW_ALIASES, "nights_raw.csv", {"id", "ref_path", "left_path", "right_path"}
    )
    _require(
        path,
        frame,
        header,
        [("ref_path",), ("left_path",), ("right_path",), ("right_vote", "left_vote")],
    )
    if "id" not in frame.columns:
        frame.insert(0, "id", range(len(frame)))
    if "right_vote" not in frame.columns:
        frame["right_vote"] = 1.0 - frame["left_vote"].astype("float64")
    if "left_vote" not in frame.columns:
        frame["left_vote"] = 1.0 - frame["right_vote"].astype("float64")
    for name in ("votes", "split", "is_imagenet", "prompt"):
        if name not in frame.columns:
            frame[name] = None
    _check_unique_ids(path, frame)
    frame = frame.astype(
        {
            "id": "int64",
            "left_vote": "float64",
            "right_vote": "float64",
            "votes": "Int64",
            "is_imagenet": "boolean",
        }
    )
    ordered = list(DATA_CSV_COLUMNS)
    return frame[ordered + [c for c in frame.columns if c not in ordered and c != "_line"]]


def _check_unique_ids(path: Path, frame: pd.DataFrame, key: tuple[str, ...] = ("id",)) -> None:
    repeated = frame[frame.duplicated(list(key), keep="first")]
    if len(repeated):
        first = repeated.iloc[0]
        raise SchemaError(
            f"{path}: line {first['_line']}: {'/'.join(key)} "
            f"{tuple(first[k] for k in key)} appears more than once ({len(repeated)} repeats)"
        )


_JND_REQUIRED = {"id", "ref_path", "distort_path", "left_path", "right_path"} | {
    "same",
    "left_same",
    "right_same",
    "response",
}


def read_jnd_csv(path: str | os.PathLike) -> pd.DataFrame:
    """Reads ``jnd_votes.csv`` (schema unpublished) into one row per (reference, distortion) pair.

    Three layouts are understood (column spellings in :data:`JND_ALIASES`):

    * one row per pair with the fraction of "same" answers (``ref_path, distort_path, same``);
    * one row per triplet with both pairs (``ref_path, left_path, right_path, left_same,
      right_same``), split into two rows;
    * one row per answer (``ref_path, distort_path, response`` with same/different or 1/0),
      aggregated into fractions and counts.

    Returns columns ``id, ref_path, distort_path, same, votes`` (``same``: fraction of "same"
    answers) followed by any unknown columns.
    """
    import pandas as pd

    path = Path(path)
    frame, header = _read_tolerant(path, JND_ALIASES, "jnd_votes.csv", _JND_REQUIRED)
    wide = {"left_path", "right_path", "left_same", "right_same"} <= set(frame.columns)
    if wide:
        pairs = []
        for side in ("left", "right"):
            part = frame.drop(
                columns=[
                    f"{other}_{suffix}"
                    for other in ("left", "right")
                    for suffix in ("path", "same")
                ]
            )
            part["distort_path"] = frame[f"{side}_path"]
            part["same"] = frame[f"{side}_same"]
            pairs.append(part)
        frame = pd.concat(pairs, ignore_index=True).sort_values(["_line", "distort_path"])
    _require(path, frame, header, [("ref_path",), ("distort_path",), ("same", "response")])
    if "same" not in frame.columns:
        frame = _aggregate_responses(path, frame)
    if "id" not in frame.columns:
        frame.insert(0, "id", pd.factorize(frame["ref_path"])[0])
    if "votes" not in frame.columns:
        frame["votes"] = None
    _check_unique_ids(path, frame, ("ref_path", "distort_path"))
    frame = frame.astype({"id": "int64", "same": "float64", "votes": "Int64"})
    ordered = list(JND_COLUMNS)
    extra = [c for c in frame.columns if c not in ordered and c != "_line"]
    return frame[ordered + extra].reset_index(drop=True)


def _aggregate_responses(path: Path, frame: pd.DataFrame) -> pd.DataFrame:
    answers = frame["response"].astype(str).str.strip().str.lower()
    same = answers.map(
        {
            "same": 1.0,
            "s": 1.0,
            "1": 1.0,
            "true": 1.0,
            "different": 0.0,
            "diff": 0.0,
            "d": 0.0,
            "0": 0.0,
            "false": 0.0,
        }
    )
    if same.isna().any():
        bad = frame[same.isna()].iloc[0]
        raise SchemaError(
            f"{path}: line {bad['_line']}: column 'response': {bad['response']!r} is not "
            "'same' or 'different' (or 1/0)"
        )
    frame = frame.assign(same=same)
    keys = [c for c in ("id", "ref_path", "distort_path") if c in frame.columns]
    grouped = frame.groupby(keys, sort=False)
    result = grouped.agg(same=("same", "mean"), votes=("same", "size"), _line=("_line", "min"))
    return result.reset_index()
