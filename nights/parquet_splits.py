"""Splits written as Parquet (``write_split(..., format="parquet")``), read back as folders.

A Parquet split holds ``provenance.json`` and ``data/{split}-NNNNN-of-NNNNN.parquet`` shards
with the images embedded. :func:`nights.load_nights` takes such a folder as its ``root``: the
rows are written once, under ``NIGHTS_HOME/splits``, as a folder in the release layout
(``data.csv``, the PNG files at their relative paths, the same ``provenance.json``), keyed by
the shards' content; from there the table is built and cached as for any NIGHTS folder, so
columns, ``min_votes`` and the image options behave exactly as they do for the release.

Example::

    >>> from nights import load_nights
    >>> from nights.splits import write_split
    >>> written = write_split(load_nights("val", root=sample_root), scratch / "val-parquet",
    ...                       format="parquet")
    >>> len(load_nights("val", root=written)) == len(load_nights("val", root=sample_root))
    True
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
from pathlib import Path

from . import _paths
from ._files import file_lock, file_sha256, write_atomic
from .errors import IntegrityError, SchemaError
from .schema import DATA_CSV_COLUMNS, IMAGE_COLUMNS, parse_relative_path

PROVENANCE = "provenance.json"
_FORMAT_VERSION = 1


def is_parquet_split(root: str | os.PathLike | None) -> bool:
    """Whether ``root`` is a folder that ``write_split(format="parquet")`` wrote."""
    if root is None:
        return False
    folder = Path(root).expanduser()
    if not (folder / PROVENANCE).is_file() or (folder / _paths.DATA_CSV).is_file():
        return False
    return any((folder / "data").glob("*.parquet"))


def write_parquet_split_folder(
    root: str | os.PathLike, home: str | os.PathLike | None = None
) -> Path:
    """The rows of the Parquet split ``root`` as a NIGHTS folder (written once); its path.

    Args:
        root: the folder ``write_split(..., format="parquet")`` wrote.
        home: where the folders are kept (default ``NIGHTS_HOME/splits``).

    Raises:
        SchemaError: a shard is not Parquet, lacks a column of ``data.csv`` or an image, or
            names an image path outside the folder (file, triplet id and column named).
        IntegrityError: two rows give different bytes for one image path.
    """
    root = Path(root).expanduser()
    shards = sorted((root / "data").glob("*.parquet"))
    digest = hashlib.sha256(f"v{_FORMAT_VERSION}".encode())
    for shard in [root / PROVENANCE, *shards]:
        digest.update(f"{shard.name}:{file_sha256(shard)}".encode())
    base = Path(home).expanduser() if home else _paths.nights_home() / "splits"
    final = base / f"{root.name}-{digest.hexdigest()[:16]}"
    with file_lock(base / f".{final.name}.lock"):
        if (final / _paths.DATA_CSV).is_file():
            return final
        partial = base / f".{final.name}.partial-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        try:
            rows = _write_images(shards, partial)
            shutil.copyfile(root / PROVENANCE, partial / PROVENANCE)
            with open(partial / _paths.DATA_CSV, "w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerow(DATA_CSV_COLUMNS)
                writer.writerows(rows)
            os.replace(partial, final)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return final


def _write_images(shards: list[Path], folder: Path) -> list[list]:
    """Writes every image of the shards under ``folder``; returns the ``data.csv`` rows."""
    import pyarrow.parquet as pq

    rows: list[list] = []
    written: dict[str, str] = {}
    for shard in shards:
        try:
            table = pq.read_table(shard)
        except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
            raise SchemaError(f"{shard}: not a readable Parquet file ({error})") from None
        missing = [c for c in (*DATA_CSV_COLUMNS, *IMAGE_COLUMNS) if c not in table.column_names]
        if missing:
            raise SchemaError(
                f"{shard}: missing column(s) {', '.join(missing)}; write the split again with "
                "nights.splits.write_split(..., format='parquet')"
            )
        for record in table.select([*DATA_CSV_COLUMNS, *IMAGE_COLUMNS]).to_pylist():
            for column in IMAGE_COLUMNS:
                _place(shard, record, column, folder, written)
            rows.append([_csv_value(record[name]) for name in DATA_CSV_COLUMNS])
    return rows


def _place(shard: Path, record: dict, column: str, folder: Path, written: dict) -> None:
    where = f"{shard}: triplet {record.get('id')!r}, column '{column}'"
    relative, storage = record[f"{column}_path"], record[column]
    try:
        relative = parse_relative_path(relative if isinstance(relative, str) else "")
    except ValueError as reason:
        raise SchemaError(f"{where}_path: {relative!r} {reason}") from None
    data = storage.get("bytes") if isinstance(storage, dict) else None
    if not isinstance(data, bytes) or not data:
        raise SchemaError(f"{where}: no image bytes; write the split again with its images")
    key = hashlib.sha256(data).hexdigest()
    if written.setdefault(relative, key) != key:
        raise IntegrityError(f"{where}: {relative} holds other bytes than in an earlier row")
    target = folder / relative
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, data)


def _csv_value(value) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    return "" if value is None else str(value)


def recorded_filters(csv_folder: Path) -> list[dict] | None:
    """The filters that ``provenance.json`` beside a ``data.csv`` records, or None when the
    folder has none (a release, or a folder not written by :func:`~nights.splits.write_split`).

    Raises:
        SchemaError: ``provenance.json`` is there but is not the JSON ``write_split`` writes.
    """
    path = csv_folder / PROVENANCE
    if not path.is_file():
        return None
    try:
        provenance = json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SchemaError(
            f"{path}: not JSON ({error}); pass min_votes explicitly, or restore the file"
        ) from None
    filters = provenance.get("filters", []) if isinstance(provenance, dict) else None
    if not isinstance(filters, list) or not all(isinstance(step, dict) for step in filters):
        raise SchemaError(
            f"{path}: 'filters' is not a list of filter records; pass min_votes explicitly, "
            "or restore the file"
        )
    return filters
