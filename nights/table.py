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
* ``images="pixels"`` with ``image_size=N``: the same pixels, stored raw as fixed-shape
  ``[N, N, 3]`` uint8 arrays (:mod:`nights.pixels`): the same size on disk as the uncompressed
  PNG copy, and read without any decoding (numpy views of the memory-mapped Arrow buffers).

A pre-resized copy is built on every core: each worker process decodes, resizes and writes
whole shards.

The cache key is the CSV's sha256, the folder and these options; ``rebuild=True`` forces a new
build (for instance after images were replaced in place). An interrupted build resumes from its
finished shards.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import itertools
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from PIL import Image

from . import _paths, pixels
from ._files import atomic_path, file_lock, file_sha256
from ._progress import progress_bar
from .errors import DatasetNotFoundError, ImageError, IntegrityError, NightsError
from .hub import is_hub_root, materialize
from .images import check_image, encode_png, resized_pixels
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
_BATCH_ROWS = 100  # rows a shard is written (and a worker holds images) at a time
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


IMAGE_STORAGE = ("path", "bytes", "pixels")


@dataclass(frozen=True)
class BuildOptions:
    """How a table stores its images: ``images`` ``"path"``, ``"bytes"`` or ``"pixels"``,
    ``image_size`` a pre-resized copy (see the module's docstring); part of the cache key."""

    images: str = "path"
    image_size: int | None = None

    def validate(self) -> None:
        if self.images not in IMAGE_STORAGE:
            raise ValueError(
                f"images must be one of {', '.join(IMAGE_STORAGE)}, not {self.images!r}"
            )
        if self.image_size is not None and not 8 <= self.image_size <= 4096:
            raise ValueError(f"image_size must be between 8 and 4096, not {self.image_size}")
        if self.images == "pixels" and self.image_size is None:
            raise ValueError(
                "images='pixels' stores a pre-resized copy: give its side too "
                "(image_size=224, or --image-size 224)"
            )


class _BadImages(Exception):
    """Ends the writing of a shard that has images which failed (it is not written)."""


def _encode_images(source: Source, options: BuildOptions, relative_paths) -> dict:
    """Maps each distinct relative path to what the table stores for it (a ``datasets.Image``
    storage dict, or ``[S, S, 3]`` pixels), or to a string saying why it failed.

    Runs in the build's worker processes for a pre-resized copy.
    """
    encoded: dict = {}
    for rel in sorted(set(relative_paths)):
        path = source.image_root / rel
        if options.image_size is None:
            encoded[rel] = (
                {"bytes": path.read_bytes(), "path": rel}
                if options.images == "bytes"
                else {"bytes": None, "path": str(path)}
            )
            continue
        try:
            pixels = resized_pixels(str(path), options.image_size)
        except ImageError as error:
            encoded[rel] = error.problem
            continue
        encoded[rel] = (
            pixels
            if options.images == "pixels"
            else {"bytes": encode_png(Image.fromarray(pixels)), "path": rel}
        )
    return encoded


def _image_paths(source: Source, rows: pd.DataFrame) -> list[str]:
    return [rel for column in source.image_columns for rel in rows[f"{column}_path"]]


def _rows_table(
    source: Source,
    options: BuildOptions,
    features,
    rows: pd.DataFrame,
    encoded: dict,
    failures: list,
) -> pa.Table:
    """The Arrow rows of ``rows``, their images ``encoded``; those that failed are appended to
    ``failures``."""
    columns = {}
    for name in features:
        if name in source.image_columns:
            relatives = rows[f"{name}_path"].tolist()
            for row_id, rel in zip(rows["id"], relatives):
                if isinstance(encoded[rel], str):
                    failures.append((int(row_id), name, rel, encoded[rel]))
            if options.images == "pixels":
                size = options.image_size
                stacked = np.zeros((len(rows), size, size, pixels.CHANNELS), dtype=np.uint8)
                for index, rel in enumerate(relatives):
                    if not isinstance(encoded[rel], str):
                        stacked[index] = encoded[rel]
                columns[name] = pixels.to_arrow(stacked)
            else:
                columns[name] = [
                    encoded[rel] if isinstance(encoded[rel], dict) else None for rel in relatives
                ]
        else:
            values = rows[name].astype(object).where(rows[name].notna(), None)
            columns[name] = [
                None if v is None else (str(v) if features[name].dtype == "string" else v)
                for v in values
            ]
    return pa.Table.from_pydict(columns, schema=features.arrow_schema)


def _write_arrow(batches, schema: pa.Schema, path: Path) -> None:
    """Streams ``batches`` into an Arrow file; atomic: a shard that exists is complete."""
    with (
        atomic_path(path) as partial,
        pa.OSFile(str(partial), "wb") as sink,
        pa.ipc.new_stream(sink, schema) as writer,
    ):
        for batch in batches:
            writer.write_table(batch)


def _exit_with_parent(parent: int) -> None:
    """Runs in each build worker: once its parent is gone (killed with SIGKILL, which no
    handler sees), the worker ends too instead of waiting for work forever."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


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


def _features(source: Source, options: BuildOptions, columns):
    """The table's features: the schema's, with raw pixel columns for ``images="pixels"``."""
    from datasets import Features

    features = arrow_features(source.variant, columns)
    if options.images != "pixels":
        return features
    return Features(
        {
            name: pixels.feature(options.image_size) if name in source.image_columns else value
            for name, value in features.items()
        }
    )


def _write_shards(
    source: Source,
    frame: pd.DataFrame,
    folder: Path,
    *,
    options: BuildOptions,
    progress: bool | None,
    jobs: int | None,
) -> None:
    """Writes the shards of ``frame`` that ``folder`` lacks (an interrupted build resumes).

    A pre-resized copy is encoded by ``jobs`` processes (default: one per CPU), a batch of
    :data:`_BATCH_ROWS` rows each, two batches per process in flight across shard ends (so no
    core waits, and memory stays bounded: a batch is ~45 MB of pixels at 224 px); this process
    writes the batches in order as they come back, a shard at a time.
    """
    for leftover in folder.glob(".shard-*.tmp"):  # of a writer killed mid-shard
        leftover.unlink()
    features = _features(source, options, frame.columns)
    todo = [
        (path, frame.iloc[start : start + _SHARD_ROWS])
        for number, start in enumerate(range(0, len(frame), _SHARD_ROWS))
        if not (path := folder / f"shard-{number:05d}.arrow").exists()
    ]
    batches = [
        [rows.iloc[start : start + _BATCH_ROWS] for start in range(0, len(rows), _BATCH_ROWS)]
        for _, rows in todo
    ]
    jobs = jobs or os.cpu_count() or 1
    pool = (
        ProcessPoolExecutor(jobs, initializer=_exit_with_parent, initargs=(os.getpid(),))
        if options.image_size and jobs > 1 and todo
        else None
    )

    def encoded_batches() -> Iterator[dict]:
        paths = (_image_paths(source, rows) for shard in batches for rows in shard)
        if pool is None:
            yield from (_encode_images(source, options, batch) for batch in paths)
            return
        window = collections.deque(
            pool.submit(_encode_images, source, options, batch)
            for batch in itertools.islice(paths, 2 * jobs)
        )
        while window:
            done = window.popleft().result()
            window.extend(
                pool.submit(_encode_images, source, options, batch)
                for batch in itertools.islice(paths, 1)
            )
            yield done

    encoded = encoded_batches()
    failures: list = []

    def shard_batches(shard: int, bar):
        before = len(failures)
        for rows in batches[shard]:
            table = _rows_table(source, options, features, rows, next(encoded), failures)
            bar.update(len(rows))
            if len(failures) == before:
                yield table
        if len(failures) > before:  # every image was tried; the shard is left unwritten
            raise _BadImages

    try:
        with progress_bar(
            total=sum(len(rows) for _, rows in todo),
            progress=progress,
            desc=f"building {source.variant} table",
            unit="row",
        ) as bar:
            for shard, (path, _) in enumerate(todo):
                with contextlib.suppress(_BadImages):
                    _write_arrow(shard_batches(shard, bar), features.arrow_schema, path)
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)  # Ctrl-C: what no worker started is dropped
    if failures:
        raise IntegrityError(_list_bad_images(source, failures))


def open_table(folder: Path):
    """Memory-maps a built table folder as one ``datasets.Dataset``.

    Raises:
        IntegrityError: a shard is damaged (truncated, overwritten): it is named.
    """
    from datasets import Dataset, concatenate_datasets

    meta = json.loads((folder / "meta.json").read_text())
    shards = []
    for name in meta["shards"]:
        try:
            shards.append(Dataset.from_file(str(folder / name)))
        except (OSError, pa.ArrowException) as error:
            reason = " ".join(str(error).split())
            raise IntegrityError(
                f"{folder / name}: not a readable table shard ({reason}); build the table "
                "again (rebuild=True, `nights build --rebuild`)"
            ) from None
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
        images: ``"path"`` (default, no copy), ``"bytes"`` (original PNG bytes embedded) or
            ``"pixels"`` (with ``image_size``: the resized copy as raw uint8 ``[S, S, 3]``
            arrays, read without decoding; ``table.with_format("numpy")`` gives them).
        image_size: store a pre-resized copy (DreamSim's bicubic resize) for fast scoring.
        cache_dir: where built tables live (default ``NIGHTS_HOME/tables``).
        rebuild: build again even if a cached table exists.
        progress: show progress bars (default: when stderr is a terminal).
        jobs: processes resizing images, a shard each (default: one per CPU).
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
