"""Splits written back to disk: a table (filtered or not) as a NIGHTS folder or Parquet shards.

Example::

    >>> from nights import load_nights
    >>> from nights.splits import write_split
    >>> from nights.votes import filter_votes
    >>> strict = filter_votes(load_nights("all", root=sample_root, min_votes=None), min_votes=8)
    >>> out = write_split(strict, scratch / "nights_min8", format="nights")
    >>> sorted(p.name for p in out.iterdir())
    ['data.csv', 'distort', 'provenance.json', 'ref']
    >>> list(load_nights("all", root=out, min_votes=None)["id"]) == list(strict["id"])
    True
"""

from __future__ import annotations

import csv
import datetime
import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from ._files import remove_abandoned, replace_folder
from .errors import ArgumentError, IntegrityError, NightsError, OutputExistsError
from .schema import DATA_CSV_COLUMNS
from .table import table_meta
from .votes import votes_frame


def _original_file(meta: dict, storage: dict | None, relative: str) -> Path | None:
    """The original image file of a row, when it is reachable on this disk."""
    root = meta.get("root")
    if root and (Path(root) / relative).is_file():
        return Path(root) / relative
    if storage and storage.get("path") and Path(storage["path"]).is_absolute():
        path = Path(storage["path"])
        return path if path.is_file() else None
    return None


def _place_file(source: Path, target: Path, link: str) -> str:
    """Copies, hard-links or symlinks; ``auto`` hard-links on the same disk, else copies."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if link == "symlink":
        os.symlink(source.resolve(), target)
        return "symlink"
    if link in ("auto", "hardlink"):
        try:
            os.link(source, target)
            return "hardlink"
        except OSError as error:
            if link == "hardlink" or error.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                raise
    shutil.copyfile(source, target)
    return "copy"


def _write_nights_folder(table, folder: Path, link: str, meta: dict) -> dict:
    missing = [c for c in DATA_CSV_COLUMNS if c not in table.column_names]
    if missing:
        raise NightsError(f"cannot write the NIGHTS format: the table lacks {', '.join(missing)}")
    rows = table.select_columns(list(DATA_CSV_COLUMNS)).to_pandas()
    image_columns = [c for c in ("ref", "left", "right") if c in table.column_names]
    storages = table.select_columns(image_columns).with_format("arrow")
    methods: dict[str, int] = {}
    written: set[str] = set()
    problems = []
    for start in range(0, len(table), 256):
        batch = storages[start : start + 256].to_pylist()
        for offset, row in enumerate(batch):
            record = rows.iloc[start + offset]
            for column in image_columns:
                relative = record[f"{column}_path"]
                if relative in written:
                    continue
                target = folder / relative
                source = _original_file(meta, row[column], relative)
                if source is not None:
                    method = _place_file(source, target, link)
                elif row[column] and row[column].get("bytes") and not meta.get("image_size"):
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(row[column]["bytes"])
                    method = "embedded"
                else:
                    problems.append(f"  id {record['id']}, {column}: {relative}")
                    continue
                written.add(relative)
                methods[method] = methods.get(method, 0) + 1
    if problems:
        raise IntegrityError(
            f"{len(problems)} original image(s) are not reachable:\n" + "\n".join(problems[:100])
        )
    with open(folder / "data.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(DATA_CSV_COLUMNS)
        for record in rows.itertuples(index=False):
            values = record._asdict()
            values["is_imagenet"] = "True" if values["is_imagenet"] else "False"
            writer.writerow([values[c] for c in DATA_CSV_COLUMNS])
    return {"images": len(written), "placed_by": methods}


def _embedded_image_column(meta: dict, storages: list, relatives: list[str]) -> list[dict]:
    values = []
    for storage, relative in zip(storages, relatives):
        if storage and storage.get("bytes") is not None:
            values.append({"bytes": storage["bytes"], "path": relative})
            continue
        source = _original_file(meta, storage, relative)
        if source is None:
            raise IntegrityError(
                f"image {relative} is not reachable (looked in {meta.get('root')})"
            )
        values.append({"bytes": source.read_bytes(), "path": relative})
    return values


def _write_parquet_folder(table, folder: Path, meta: dict, shard_rows: int) -> dict:
    import pyarrow.parquet as pq

    schema = table.features.arrow_schema
    image_columns = [c for c in ("ref", "left", "right", "distort") if c in table.column_names]
    arrow_rows = table.with_format("arrow")
    split_values = (
        table.select_columns(["split"]).to_pandas()["split"].fillna("train")
        if "split" in table.column_names
        else pd.Series(["train"] * len(table))
    )
    files = []
    (folder / "data").mkdir(parents=True)
    for split_name in sorted(split_values.unique()):
        indices = np.flatnonzero((split_values == split_name).to_numpy())
        count = max(1, -(-len(indices) // shard_rows))
        for shard in range(count):
            chosen = indices[shard * shard_rows : (shard + 1) * shard_rows]
            part = arrow_rows[chosen.tolist()] if len(chosen) else arrow_rows[0:0]
            columns = {}
            for name in schema.names:
                if name in image_columns:
                    columns[name] = _embedded_image_column(
                        meta, part.column(name).to_pylist(), part.column(f"{name}_path").to_pylist()
                    )
                else:
                    columns[name] = part.column(name)
            name = f"data/{split_name}-{shard:05d}-of-{count:05d}.parquet"
            pq.write_table(pa.Table.from_pydict(columns, schema=schema), folder / name)
            files.append(name)
    return {"files": files}


def _refuse_to_write_over_the_source(out: Path, meta: dict) -> None:
    """No writer may overwrite the folder it reads from: ``out`` (symlinks resolved) must not
    be, hold or lie inside the folder the table's images come from, nor hold its CSV."""
    target = out.resolve()
    csv_path = Path(meta["csv_path"]).resolve() if meta.get("csv_path") else None
    root = Path(meta["root"]).resolve() if meta.get("root") else None
    if root is not None and (target == root or root in target.parents):
        relation, source = ("is" if target == root else "lies inside"), root
    elif root is not None and target in root.parents:
        relation, source = "holds", root
    elif csv_path is not None and (target == csv_path or target in csv_path.parents):
        relation, source = "holds", csv_path
    else:
        return
    raise NightsError(
        f"refusing to write {out}: it {relation} {source}, which the table was read from "
        "(writing there would destroy the source); choose an output folder outside it"
    )


def write_split(
    table,
    out: str | os.PathLike,
    format: str = "nights",
    *,
    link: str = "auto",
    overwrite: bool = False,
    shard_rows: int = 100,
    note: str | None = None,
) -> Path:
    """Writes a table (for instance a filtered one) as a folder other tools can read.

    Args:
        table: a triplet table from :func:`~nights.load_nights` or :func:`filter_votes`.
        out: the folder to create.
        format: ``"nights"``: ``data.csv`` with the release header plus the images it
            references at the same relative paths, so upstream's loader and
            ``load_nights(root=out)`` read it; ``"parquet"``:
            ``data/{split}-NNNNN-of-NNNNN.parquet`` shards with the images embedded, read by
            ``datasets.load_dataset("parquet", data_dir=out)``.
        link: for ``"nights"``: ``"auto"`` (hard links on the same disk, else copies),
            ``"copy"``, ``"hardlink"`` or ``"symlink"``. Original files are used even when the
            table holds a resized copy.
        overwrite: replace an existing ``out`` (never the table's own source: an ``out`` that
            is, holds or lies inside the folder the table was read from is refused).
        shard_rows: rows per Parquet file.
        note: free text stored in ``provenance.json``.

    Both formats get ``provenance.json``: the source CSV's sha256 and path, the build options,
    every filter applied, counts per split, the date. The folder is assembled beside ``out``
    and renamed into place at the end: an interrupted write leaves no folder at ``out``, and
    the next write to ``out`` removes what a killed one left beside it.

    Raises:
        NightsError: ``out`` is, holds or lies inside the table's source folder, or the table
            has no rows.
        FileExistsError: ``out`` exists and ``overwrite`` is False.
        IntegrityError: original images are not reachable.
    """
    if format not in ("nights", "parquet"):
        raise ArgumentError(f"format must be 'nights' or 'parquet', not {format!r}")
    if link not in ("auto", "copy", "hardlink", "symlink"):
        raise ArgumentError(f"link must be auto, copy, hardlink or symlink, not {link!r}")
    out = Path(out)
    meta = table_meta(table)
    _refuse_to_write_over_the_source(out, meta)
    remove_abandoned(out)
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    if len(table) == 0:
        raise NightsError("the table has no rows: nothing to write")
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        if format == "nights":
            details = _write_nights_folder(table, partial, link, meta)
        else:
            details = _write_parquet_folder(table, partial, meta, shard_rows)
        frame = votes_frame(table)
        counts = (
            frame["split"].fillna("none").value_counts().sort_index().to_dict()
            if "split" in frame
            else {}
        )
        provenance = {
            "format": format,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "rows": len(table),
            "counts": {str(k): int(v) for k, v in counts.items()},
            "source": {
                k: meta.get(k)
                for k in ("variant", "csv", "csv_path", "root", "images", "image_size")
            },
            "filters": meta.get("filters", []),
            "note": note,
            **details,
        }
        from . import __version__

        provenance["nights_version"] = __version__
        (partial / "provenance.json").write_text(json.dumps(provenance, indent=2))
        replace_folder(partial, out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return out
