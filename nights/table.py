"""The triplet table: NIGHTS as a memory-mapped Arrow ``datasets.Dataset``, built once.

One row per triplet with the columns of ``data.csv`` and three ``datasets.Image`` columns
(``ref``, ``left``, ``right``). The first :func:`load_nights` for a folder validates the CSV,
checks every image and writes Arrow shards under ``NIGHTS_HOME/tables``; later calls
memory-map them and decode nothing.

How the images are stored (choose with ``images=``):

* ``"path"`` (default): the Arrow rows hold the absolute path of each original PNG. Nothing is
  copied (the full release is 58 GB), nothing is re-encoded; images decode from the folder.
* ``"bytes"``: the original PNG bytes, unchanged, inside the Arrow files: a self-contained copy
  that no longer needs the folder (what :func:`nights.splits.write_split` puts into Parquet).
* ``image_size=N``: a pre-resized copy, resized as DreamSim preprocesses (RGB, PIL bicubic,
  square) and stored as uncompressed (lossless) PNG; small and fast to iterate for scoring.

The cache key is the CSV's sha256, the folder and these options; ``rebuild=True`` forces a new
build (for instance after images were replaced in place). An interrupted build resumes from its
finished shards.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from . import _paths
from ._files import atomic_path, file_lock, file_sha256
from ._progress import progress_bar
from .errors import DatasetNotFoundError, ImageError, IntegrityError, NightsError
from .hub import is_hub_root, materialize
from .images import check_image, encode_png, open_rgb, resize_like_dreamsim
from .parquet_splits import is_parquet_split, recorded_filters, write_parquet_split_folder
from .schema import (
    BY_ORIGIN,
    IMAGE_COLUMNS,
    JND_IMAGE_COLUMNS,
    SPLITS,
    arrow_features,
    read_data_csv,
    read_jnd_csv,
    read_raw_csv,
    split_mask,
)

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2
VARIANTS = ("nights", "unfiltered", "jnd")
#: Upstream's view of the release: rows with at least 6 votes (its published numbers use it).
UPSTREAM_MIN_VOTES = 6
_SHARD_ROWS = 1000
_MAX_LISTED = 100
_DOWNLOAD_HINT = (
    "Download it with `nights download chunked --root DIR` (or load_nights(..., download=True)),"
    " or write the synthetic sample with `nights sample DIR`, then pass root=DIR."
)


@dataclass(frozen=True)
class Source:
    """Where a table comes from: its CSV and the folder its image paths are relative to."""

    variant: str
    csv_path: Path
    image_root: Path

    @property
    def image_columns(self) -> tuple[str, ...]:
        return JND_IMAGE_COLUMNS if self.variant == "jnd" else IMAGE_COLUMNS


def resolve_source(root: str | os.PathLike | None, variant: str = "nights") -> Source:
    """Finds the CSV of ``variant`` in ``root`` (a release folder or a ``NIGHTS_HOME``-like one).

    ``root`` may be the folder holding the CSV (``.../nights``) or the folder above it
    (``NIGHTS_HOME``, or what ``nights sample`` writes); ``None`` means ``NIGHTS_HOME``. A Hub
    dataset id (``hf://datasets/OWNER/NAME[@REVISION]``) or a folder in the Hub layout is first
    written out as a release folder under ``NIGHTS_HOME/hub`` (see :mod:`nights.hub`), a
    Parquet split (``write_split(..., format="parquet")``) as a folder under
    ``NIGHTS_HOME/splits`` (see :mod:`nights.parquet_splits`).
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, not {variant!r}")
    if is_hub_root(root):
        root = materialize(root, variant)
    elif variant == "nights" and is_parquet_split(root):
        root = write_parquet_split_folder(root)
    base = Path(root).expanduser() if root is not None else _paths.nights_home()
    if variant == "nights":
        candidates = [
            (base / _paths.DATA_CSV, base),
            (base / _paths.NIGHTS_DIR / _paths.DATA_CSV, base / _paths.NIGHTS_DIR),
        ]
    elif variant == "unfiltered":
        candidates = [
            (base / _paths.RAW_CSV, base),
            (base / _paths.UNFILTERED_DIR / _paths.RAW_CSV, base / _paths.UNFILTERED_DIR),
        ]
    else:  # JND pairs point at images of the 20k release
        candidates = [
            (base / _paths.JND_CSV, base / _paths.NIGHTS_DIR),
            (base / _paths.JND_CSV, base),
            (base.parent / _paths.JND_CSV, base),
        ]
    for csv_path, image_root in candidates:
        if csv_path.is_file() and (variant != "jnd" or image_root.is_dir()):
            return Source(variant, csv_path.resolve(), image_root.resolve())
    looked = ", ".join(sorted({str(csv) for csv, _ in candidates}))
    raise DatasetNotFoundError(
        f"No NIGHTS {variant} data found (looked for {looked}). " + _DOWNLOAD_HINT
    )


def origin_min_votes(source: Source) -> int | None:
    """The vote filter a table gets by default (``min_votes="origin"``), from where it comes.

    The release (and the synthetic sample, which mirrors it): upstream's ``votes >= 6``, as its
    published numbers need. A folder that :func:`~nights.splits.write_split` (or ``nights
    filter``, ``nights annotate aggregate --out``) wrote: the policy its ``provenance.json``
    records, i.e. the strictest ``min_votes`` applied since the votes were last replaced (by
    an annotation campaign), or None (every row) when it records none. So a split merged from
    a new campaign with 3-5 votes per triplet keeps its rows.

    Example::

        >>> from nights.splits import write_split
        >>> origin_min_votes(resolve_source(sample_root))
        6
        >>> every = write_split(load_nights("all", root=sample_root, min_votes=None),
        ...                     scratch / "every")
        >>> print(origin_min_votes(resolve_source(every)))
        None
    """
    filters = recorded_filters(source.csv_path.parent)
    if filters is None:
        return UPSTREAM_MIN_VOTES
    policy = None
    for step in filters:
        if "votes_from" in step:  # new votes: earlier vote filters no longer describe them
            policy = None
        elif isinstance(step.get("min_votes"), int) and not isinstance(step["min_votes"], bool):
            policy = max(policy or 0, step["min_votes"])
    return policy


def release_or_sample(root: str | os.PathLike | None = None) -> Path:
    """``root`` when given; else ``NIGHTS_HOME`` when it holds the release; else the embedded
    synthetic sample (written on first use; a warning says so): the data that the commands
    run on when no folder is named."""
    from .synthetic import ensure_sample

    if root is not None:
        return Path(root)
    try:
        resolve_source(None, "nights")
        return _paths.nights_home()
    except DatasetNotFoundError:
        logger.warning(
            "no NIGHTS release in %s: using the embedded synthetic sample (download the "
            "release with `nights download chunked`)",
            _paths.nights_home(),
        )
        return ensure_sample()


def read_source_csv(source: Source) -> pd.DataFrame:
    """The validated CSV of a source, with the reader its variant needs."""
    reader = {"nights": read_data_csv, "unfiltered": read_raw_csv, "jnd": read_jnd_csv}
    return reader[source.variant](source.csv_path)


def _check_all_images(source: Source, frame: pd.DataFrame, progress: bool | None) -> None:
    """Reads every image header; raises one IntegrityError listing every bad file."""
    paths = sorted({path for column in source.image_columns for path in frame[f"{column}_path"]})
    with ThreadPoolExecutor(8) as pool:
        reasons = dict(
            zip(
                paths,
                pool.map(
                    lambda rel: check_image(source.image_root / rel, decode=False),
                    progress_bar(paths, progress=progress, desc="checking images", unit="img"),
                ),
            )
        )
    bad = [
        (row.id, column, getattr(row, f"{column}_path"))
        for row in frame.itertuples()
        for column in source.image_columns
        if reasons[getattr(row, f"{column}_path")]
    ]
    if bad:
        raise IntegrityError(_list_bad_images(source, [(i, c, p, reasons[p]) for i, c, p in bad]))


def _list_bad_images(source: Source, bad: list[tuple[int, str, str, str]]) -> str:
    lines = [
        f"  id {triplet_id}, {column}: {source.image_root / path}: {reason}"
        for triplet_id, column, path, reason in bad
    ]
    more = f"\n  ... and {len(lines) - _MAX_LISTED} more" if len(lines) > _MAX_LISTED else ""
    return (
        f"{len(bad)} image reference(s) in {source.csv_path} are unusable:\n"
        + "\n".join(lines[:_MAX_LISTED])
        + more
        + "\nRestore the files (re-run the download, which resumes) and load again."
    )


def _encode_resized(task: tuple[str, int]) -> bytes | str:
    """Worker: the resized PNG bytes of one file, or the reason it failed."""
    path, size = task
    try:
        return encode_png(resize_like_dreamsim(open_rgb(path), size))
    except ImageError as error:
        return error.problem


@dataclass(frozen=True)
class BuildOptions:
    """How a table stores its images: ``images`` ``"path"`` or ``"bytes"``, ``image_size`` a
    pre-resized copy (see the module's docstring); part of the cache key."""

    images: str = "path"
    image_size: int | None = None

    def validate(self) -> None:
        if self.images not in ("path", "bytes"):
            raise ValueError(f"images must be 'path' or 'bytes', not {self.images!r}")
        if self.image_size is not None and not 8 <= self.image_size <= 4096:
            raise ValueError(f"image_size must be between 8 and 4096, not {self.image_size}")


class _ImageEncoder:
    """Turns relative image paths into ``datasets.Image`` storage for one storage mode."""

    def __init__(self, source: Source, options: BuildOptions, jobs: int):
        self.source, self.images, self.image_size = source, options.images, options.image_size
        self.pool = ProcessPoolExecutor(jobs) if self.image_size and jobs > 1 else None

    def close(self) -> None:
        if self.pool:
            self.pool.shutdown()

    def encode(self, relative_paths: Sequence[str]) -> dict[str, dict | str]:
        """Maps each path to its storage dict, or to a string saying why it failed."""
        unique = sorted(set(relative_paths))
        absolute = [str(self.source.image_root / rel) for rel in unique]
        if self.image_size:
            tasks = [(path, self.image_size) for path in absolute]
            mapper = (
                self.pool.map(_encode_resized, tasks, chunksize=8)
                if self.pool
                else map(_encode_resized, tasks)
            )
            encoded = dict(zip(unique, mapper))
            return {
                rel: value if isinstance(value, str) else {"bytes": value, "path": rel}
                for rel, value in encoded.items()
            }
        if self.images == "bytes":
            return {
                rel: {"bytes": Path(path).read_bytes(), "path": rel}
                for rel, path in zip(unique, absolute)
            }
        return {rel: {"bytes": None, "path": path} for rel, path in zip(unique, absolute)}


def _shard_table(frame: pd.DataFrame, features, encoder: _ImageEncoder, failures: list) -> pa.Table:
    """The Arrow rows of ``frame``; images that fail are appended to ``failures``."""
    columns = {}
    for name in features:
        if name in encoder.source.image_columns:
            encoded = encoder.encode(frame[f"{name}_path"].tolist())
            for row_id, rel in zip(frame["id"], frame[f"{name}_path"]):
                if isinstance(encoded[rel], str):
                    failures.append((int(row_id), name, rel, encoded[rel]))
            columns[name] = [
                encoded[rel] if isinstance(encoded[rel], dict) else None
                for rel in frame[f"{name}_path"]
            ]
        else:
            values = frame[name].astype(object).where(frame[name].notna(), None)
            columns[name] = [
                None if v is None else (str(v) if features[name].dtype == "string" else v)
                for v in values
            ]
    return pa.Table.from_pydict(columns, schema=features.arrow_schema)


def _write_arrow(table: pa.Table, path: Path) -> None:
    """Atomic: a shard that exists is complete."""
    with (
        atomic_path(path) as partial,
        pa.OSFile(str(partial), "wb") as sink,
        pa.ipc.new_stream(sink, table.schema) as writer,
    ):
        writer.write_table(table, max_chunksize=100)


def build_table(
    source: Source,
    options: BuildOptions = BuildOptions(),
    *,
    cache_dir: str | os.PathLike | None = None,
    rebuild: bool = False,
    progress: bool | None = None,
    jobs: int | None = None,
) -> Path:
    """Builds (or finds) the cached Arrow table of ``source``; returns its folder.

    The folder holds ``shard-NNNNN.arrow`` files and ``meta.json``; it appears under its final
    name only once complete.
    """
    options.validate()
    csv_sha256 = file_sha256(source.csv_path)
    key_fields = {
        "format": FORMAT_VERSION,
        "variant": source.variant,
        "csv": csv_sha256,
        "root": str(source.image_root),
        "images": options.images,
        "image_size": options.image_size,
    }
    key = hashlib.sha256(json.dumps(key_fields, sort_keys=True).encode()).hexdigest()[:20]
    cache = _paths.table_cache_dir(cache_dir)
    final = cache / f"{source.variant}-{key}"
    with file_lock(cache / f".{final.name}.lock"):  # one builder per entry
        if (final / "meta.json").is_file() and not rebuild:
            return final
        partial = cache / f".{final.name}.partial"
        if rebuild:
            shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True, exist_ok=True)
        frame = read_source_csv(source)
        _check_all_images(source, frame, progress)
        started = time.time()
        _write_shards(source, frame, partial, options=options, progress=progress, jobs=jobs)
        meta = {
            **key_fields,
            "csv_path": str(source.csv_path),
            "rows": len(frame),
            "shards": sorted(p.name for p in partial.glob("shard-*.arrow")),
            "build_seconds": round(time.time() - started, 3),
        }
        (partial / "meta.json").write_text(json.dumps(meta, indent=2))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
        logger.info("built %s (%d rows) in %.1f s", final, len(frame), meta["build_seconds"])
        return final


def _write_shards(
    source: Source,
    frame: pd.DataFrame,
    folder: Path,
    *,
    options: BuildOptions,
    progress: bool | None,
    jobs: int | None,
) -> None:
    """Writes the shards of ``frame`` that ``folder`` lacks (an interrupted build resumes)."""
    features = arrow_features(source.variant, frame.columns)
    encoder = _ImageEncoder(source, options, jobs or os.cpu_count() or 1)
    failures: list = []
    starts = range(0, len(frame), _SHARD_ROWS)
    try:
        for number, start in enumerate(
            progress_bar(
                starts, progress=progress, desc=f"building {source.variant} table", unit="shard"
            )
        ):
            shard = folder / f"shard-{number:05d}.arrow"
            if shard.exists():  # finished by an earlier, interrupted build
                continue
            before = len(failures)
            table = _shard_table(
                frame.iloc[start : start + _SHARD_ROWS], features, encoder, failures
            )
            if len(failures) == before:
                _write_arrow(table, shard)
    finally:
        encoder.close()
    if failures:
        raise IntegrityError(_list_bad_images(source, failures))


def open_table(folder: Path):
    """Memory-maps a built table folder as one ``datasets.Dataset``."""
    from datasets import Dataset, concatenate_datasets

    meta = json.loads((folder / "meta.json").read_text())
    shards = [Dataset.from_file(str(folder / name)) for name in meta["shards"]]
    table = shards[0] if len(shards) == 1 else concatenate_datasets(shards)
    table.info.description = json.dumps({"nights": meta})
    return table


def table_meta(table) -> dict:
    """What a table was built from (CSV hash, folder, options), as recorded at build time."""
    try:
        return dict(json.loads(table.info.description or "{}").get("nights", {}))
    except json.JSONDecodeError:
        return {}


def select_split(table, split: str | None, min_votes: int | None):
    """Rows of one split (see :data:`SPLITS`) with at least ``min_votes`` votes."""
    data = table.data
    if split != "all" and split in SPLITS and "split" not in table.column_names:
        raise NightsError("this table has no split column; use split='all'")
    splits = (
        data.column("split").to_numpy(zero_copy_only=False)
        if split != "all"
        else np.zeros(len(table))
    )
    imagenet = (
        data.column("is_imagenet").to_numpy(zero_copy_only=False)
        if split in ("test_imagenet", "test_no_imagenet")
        else None
    )
    mask = split_mask(split, splits, imagenet)
    base = "test" if str(split).startswith("test") else split
    if split != "all" and not (splits == base).any():
        found = sorted({str(s) for s in splits})
        raise NightsError(
            f"no row has split {base!r} (splits present: {', '.join(found)}); "
            "use split='all' for tables without splits"
        )
    if min_votes is not None:
        votes = data.column("votes").to_numpy(zero_copy_only=False)
        votes = np.where(pd.isna(votes), -1, votes).astype(np.int64)
        in_split = int(mask.sum())
        mask &= votes >= min_votes
        if in_split and not mask.any():
            warn_no_row_left(
                f"min_votes={min_votes} (votes >= {min_votes})",
                f"the {in_split} row(s) of split {split!r} in "
                f"{table_meta(table).get('csv_path', 'the table')}",
                "pass min_votes=None (--min-votes 0) to keep them",
            )
    selected = table.select(np.flatnonzero(mask), keep_in_memory=True)
    return with_step(table, selected, {"split": split, "min_votes": min_votes})


def warn_no_row_left(condition: str, rows: str, fix: str) -> None:
    """Logs that a filter removed every row: an empty table is never a silent outcome."""
    logger.warning("%s leaves none of %s; %s", condition, rows, fix)


def with_step(table, selected, step: dict):
    """``selected`` (rows of ``table``) with ``step`` appended to its recorded filters.

    The record travels in ``info.description`` and ends up in ``provenance.json``.
    """
    meta = table_meta(table)
    meta["filters"] = [*meta.get("filters", []), step]
    selected.info.description = json.dumps({"nights": meta})
    return selected


def load_nights(
    split: str | None = "test",
    root: str | os.PathLike | None = None,
    variant: str = "nights",
    min_votes: int | str | None = BY_ORIGIN,
    *,
    images: str = "path",
    image_size: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    rebuild: bool = False,
    progress: bool | None = None,
    jobs: int | None = None,
    download: bool = False,
    base_url: str | None = None,
):
    """Loads NIGHTS as a memory-mapped ``datasets.Dataset``, one row per triplet.

    Args:
        split: ``train``, ``val``, ``test``, ``test_imagenet``, ``test_no_imagenet`` or ``all``;
            ``None`` gives a ``DatasetDict`` of ``train``, ``val`` and ``test``.
        root: the release folder (holding ``data.csv``) or the folder above it, or a split
            written by :func:`~nights.splits.write_split` (either format); ``None`` is
            ``NIGHTS_HOME`` (default ``~/.cache/nights``). Also a Hub dataset id
            (``hf://datasets/OWNER/NAME``, ``@REVISION`` optional) or a folder written by
            ``nights publish``: read through ``datasets`` once, then cached as a folder is.
        variant: ``nights`` (the 20k release) or ``unfiltered`` (``nights_raw.csv``).
        min_votes: keep rows with at least this many votes; ``None`` keeps every row. The
            default ``"origin"`` follows where the table comes from
            (:func:`origin_min_votes`): upstream's 6 for the release (its published test
            numbers use it), the recorded policy for a split written by ``write_split`` or
            ``nights annotate aggregate`` (so new campaigns with 3-5 votes keep their rows).
            A filter that leaves no row of the split logs a warning naming it.
        images: ``"path"`` (default, no copy) or ``"bytes"`` (original PNG bytes embedded).
        image_size: store a pre-resized copy (DreamSim's bicubic resize) for fast scoring.
        cache_dir: where built tables live (default ``NIGHTS_HOME/tables``).
        rebuild: build again even if a cached table exists.
        progress: show progress bars (default: when stderr is a terminal).
        jobs: processes used to resize images (default: one per CPU).
        download: when nothing is at ``root``, download the release there first (the chunked
            release for ``nights``; see :func:`nights.download.download`), from ``base_url``.

    Columns: ``id, ref, left, right`` (``datasets.Image``), ``left_vote, right_vote, votes,
    split, is_imagenet, prompt, ref_path, left_path, right_path`` (the paths exactly as in the
    CSV, swapped sides included), plus any unknown columns of an unfiltered CSV.

    Raises:
        DatasetNotFoundError: nothing at ``root``; the message says how to download.
        SchemaError: the CSV is malformed (file, line, column and value named).
        IntegrityError: images are missing or unreadable (every one listed with its triplet).

    Example::

        >>> from nights import load_nights
        >>> test = load_nights(split="test", root=sample_root)
        >>> row = test[0]; row["ref"].size, row["left_vote"] + row["right_vote"]
        ((48, 48), 1.0)
    """
    if variant == "jnd":
        raise ValueError("use load_jnd() for the JND votes")
    try:
        source = resolve_source(root, variant)
    except DatasetNotFoundError:
        if not download or is_hub_root(root):
            raise
        from .download import download as fetch

        fetch(
            "chunked" if variant == "nights" else variant,
            root,
            base_url=base_url,
            progress=progress,
        )
        source = resolve_source(root, variant)
    if isinstance(min_votes, str):
        if min_votes != BY_ORIGIN:
            raise ValueError(
                f"min_votes must be a number, None or {BY_ORIGIN!r}, not {min_votes!r}"
            )
        min_votes = origin_min_votes(source)
    build = {"cache_dir": cache_dir, "rebuild": rebuild, "progress": progress, "jobs": jobs}
    table = open_table(build_table(source, BuildOptions(images, image_size), **build))
    if split is None:
        from datasets import DatasetDict

        return DatasetDict(
            {name: select_split(table, name, min_votes) for name in ("train", "val", "test")}
        )
    return select_split(table, split, min_votes)


def load_jnd(
    root: str | os.PathLike | None = None,
    *,
    images: str = "path",
    image_size: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    rebuild: bool = False,
    progress: bool | None = None,
    jobs: int | None = None,
):
    """Loads the JND votes as a ``datasets.Dataset``, one row per (reference, distortion) pair.

    Columns: ``id, ref, distort`` (images), ``same`` (fraction of "same" answers), ``votes``,
    ``ref_path, distort_path`` and any unknown columns of ``jnd_votes.csv``. ``root`` is a
    ``NIGHTS_HOME``-like folder holding ``jnd_votes.csv`` and ``nights/``, or the ``nights/``
    folder with ``jnd_votes.csv`` inside or beside it. Other arguments as :func:`load_nights`.
    """
    build = {"cache_dir": cache_dir, "rebuild": rebuild, "progress": progress, "jobs": jobs}
    return open_table(
        build_table(resolve_source(root, "jnd"), BuildOptions(images, image_size), **build)
    )
