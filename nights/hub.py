"""NIGHTS in the Hugging Face Hub layout, read back: a Hub id or a folder written by ``publish``.

:mod:`nights.publish` writes a dataset repository folder: one config per variant (``default``:
the 20k release; ``unfiltered``; ``jnd``) or per filtered split set, declared in the card's
YAML ``configs:`` block, with Parquet shards ``data/CONFIG/SPLIT-NNNNN-of-NNNNN.parquet`` that
embed the original PNG bytes. This module lets :func:`nights.load_nights` (and every command
with ``--root``) take such a dataset as its root: a Hub id ``hf://datasets/OWNER/NAME``
(``@REVISION`` optional: a branch, tag or commit) or a folder in that layout.

The rows of the config are read with ``datasets`` (a Hub id through ``load_dataset`` with its
cache, ``HF_HUB_OFFLINE`` and revisions; a folder by streaming it, as the Hub would read it)
and written once as a release folder under ``NIGHTS_HOME/hub``: the variant's CSV and its PNG
files, byte for byte. From there the table is built and cached as for any release folder, so
columns, ``min_votes`` and the image options behave exactly as they do for the release.

Example::

    >>> from nights import load_nights
    >>> test = load_nights("test", root="hf://datasets/OWNER/nights")     # doctest: +SKIP
    >>> test = load_nights("test", root="./nights-hub")                   # doctest: +SKIP
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from urllib.parse import unquote

from . import _paths
from ._files import file_lock, write_atomic
from ._progress import progress_bar
from .errors import ArgumentError, DatasetNotFoundError, IntegrityError, NightsError
from .schema import DATA_CSV_COLUMNS, IMAGE_COLUMNS, JND_IMAGE_COLUMNS, parse_relative_path

HUB_PREFIX = "hf://datasets/"
CARD = "README.md"
PROVENANCE = "provenance.json"
DATA_DIR = "data"
HUB_FORMAT = "hub"
# Configs of the release variants; "nights" reads the repository's default config.
VARIANT_CONFIGS = {"nights": "default", "unfiltered": "unfiltered", "jnd": "jnd"}
IMAGES_OF_VARIANT = {"nights": IMAGE_COLUMNS, "unfiltered": IMAGE_COLUMNS, "jnd": JND_IMAGE_COLUMNS}
_RELEASE_DIRS = {
    "nights": (_paths.NIGHTS_DIR, _paths.DATA_CSV),
    "unfiltered": (_paths.UNFILTERED_DIR, _paths.RAW_CSV),
    "jnd": (_paths.NIGHTS_DIR, None),  # jnd_votes.csv beside nights/, its images inside
}
_MATERIALIZED_VERSION = 1
_BATCH_ROWS = 128
_OPTIONAL_COLUMNS = ("votes", "split", "is_imagenet", "prompt")
_REPO_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


@dataclass(frozen=True)
class HubId:
    """A dataset repository on the Hub, at a revision (None: the default branch)."""

    repo_id: str
    revision: str | None = None

    def __str__(self) -> str:
        return HUB_PREFIX + self.repo_id + (f"@{self.revision}" if self.revision else "")


def parse_hub_id(text: str) -> HubId:
    """``hf://datasets/OWNER/NAME[@REVISION]`` as a :class:`HubId`.

    The revision may be a branch, a tag or a commit; a branch with a slash is written with
    ``%2F`` (``@refs%2Fpr%2F1``), as in ``huggingface_hub`` paths.

    Raises:
        NightsError: the text is not a dataset id of that form (the message shows the form).

    Example::

        >>> parse_hub_id("hf://datasets/alice/nights@v1")
        HubId(repo_id='alice/nights', revision='v1')
    """
    form = "expected hf://datasets/OWNER/NAME or hf://datasets/OWNER/NAME@REVISION"
    if not text.startswith(HUB_PREFIX):
        raise NightsError(f"{text!r} is not a Hub dataset id ({form})")
    rest = text[len(HUB_PREFIX) :]
    repo, _, revision = rest.partition("@")
    parts = repo.split("/")
    if (
        len(parts) != 2
        or not all(_REPO_PART.match(part) for part in parts)
        or any(".." in part or part.endswith(".git") for part in parts)
        or ("@" in rest and not revision)
    ):
        raise NightsError(f"{text!r} is not a Hub dataset id ({form})")
    return HubId(repo, unquote(revision) if revision else None)


def read_card_configs(folder: Path) -> dict[str, dict]:
    """The ``configs:`` of a dataset card, by name (empty when the card declares none)."""
    import yaml
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard

    try:
        card = DatasetCard.load(folder / CARD)
        return dict(MetadataConfigs.from_dataset_card_data(card.data))
    except (ValueError, TypeError, OSError, yaml.YAMLError) as error:
        reason = " ".join(str(error).split())
        raise NightsError(f"{folder / CARD}: the YAML header cannot be read ({reason})") from None


def _hub_text(root: str | os.PathLike) -> str | None:
    """``root`` as a Hub id text, or None; ``Path("hf://...")`` (which keeps one slash, as in
    ``--root`` options typed as paths) counts too."""
    text = str(root)
    if text.startswith("hf:/") and not text.startswith("hf://"):
        text = "hf://" + text[4:]
    return text if text.startswith("hf://") else None


def is_hub_root(root: str | os.PathLike | None) -> bool:
    """Whether ``root`` is a Hub id or a folder in the Hub layout (a card with ``configs:``
    and no release CSV)."""
    if root is None:
        return False
    if _hub_text(root):
        return True
    folder = Path(root).expanduser()
    if not (folder / CARD).is_file() or (folder / _paths.DATA_CSV).is_file():
        return False
    head = (folder / CARD).read_text(encoding="utf-8", errors="replace")[:65536]
    return head.startswith("---") and re.search(r"^configs:", head, re.MULTILINE) is not None


def default_config(configs: dict[str, dict]) -> str | None:
    """The config ``load_dataset(path)`` reads when none is named (``datasets``' rule)."""
    from datasets.utils.metadata import MetadataConfigs

    return MetadataConfigs(configs).get_default_config_name()


def materialize(
    root: str | os.PathLike,
    variant: str = "nights",
    *,
    home: str | os.PathLike | None = None,
    progress: bool | None = None,
) -> Path:
    """Writes (once) the rows of ``variant``'s config as a release folder; returns its path.

    The folder holds what :func:`nights.table.resolve_source` looks for (``nights/data.csv``,
    ``nights_unfiltered/nights_raw.csv`` or ``jnd_votes.csv`` beside ``nights/``) and the PNG
    files at their relative paths. It lives under ``NIGHTS_HOME/hub`` (or ``home``), keyed by
    content: for a Hub id the commit that ``datasets`` resolved, for a folder the config's
    Parquet footers and sizes. An interrupted write leaves no folder that looks complete.

    Raises:
        DatasetNotFoundError: no such repository, revision or config (or not in the cache
            when offline).
        NightsError / IntegrityError: the rows lack a column, a path is not relative to the
            release, or an image has no bytes.
    """
    if variant not in VARIANT_CONFIGS:
        raise ArgumentError(f"variant must be one of {', '.join(VARIANT_CONFIGS)}, not {variant!r}")
    reader = _HubReader.open(root, variant)
    base = Path(home).expanduser() if home else _paths.nights_home() / "hub"
    final = base / f"{reader.slug}-{reader.config}-{reader.key[:16]}"
    with file_lock(base / f".{final.name}.lock"):
        if (final / ".complete").is_file():
            return final
        partial = base / f".{final.name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        try:
            _write_release(reader, partial, progress)
            write_atomic(
                partial / ".complete", json.dumps({"source": reader.label, "key": reader.key})
            )
            shutil.rmtree(final, ignore_errors=True)
            os.replace(partial, final)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return final


class _HubReader:
    """The rows of one config of a Hub id or Hub-layout folder, and a content key for them."""

    def __init__(self, label: str, slug: str, variant: str, config: str, key: str, rows):
        self.label, self.slug, self.variant, self.config = label, slug, variant, config
        self.key, self.rows = key, rows

    @classmethod
    def open(cls, root: str | os.PathLike, variant: str) -> _HubReader:
        if _hub_text(root):
            return cls._from_hub(parse_hub_id(_hub_text(root)), variant)
        return cls._from_folder(Path(root).expanduser().resolve(), variant)

    @classmethod
    def _from_folder(cls, folder: Path, variant: str) -> _HubReader:
        import datasets

        configs = read_card_configs(folder)
        config = default_config(configs) if variant == "nights" else VARIANT_CONFIGS[variant]
        if config not in configs:
            raise DatasetNotFoundError(
                f"{folder} has no {variant} config (configs: {', '.join(configs) or 'none'})"
            )
        try:  # the files of each split, resolved by datasets as the Hub resolves them
            builder = datasets.load_dataset_builder(str(folder), config)
        except (OSError, ValueError) as error:
            raise DatasetNotFoundError(
                f"{folder}: config {config!r}: {first_line(error)}"
            ) from None
        files = {
            split: [Path(path) for path in paths]
            for split, paths in (builder.config.data_files or {}).items()
        }
        if not any(files.values()):
            raise DatasetNotFoundError(f"{folder}: config {config!r} matches no data file")
        for path in (p for paths in files.values() for p in paths):
            if not Path(os.path.normpath(path)).is_relative_to(folder):
                raise NightsError(
                    f"{folder / CARD}: config {config!r} names the data file {path}, outside "
                    "the folder; a Hub folder's data_files lie inside it"
                )
        digest = hashlib.sha256(f"{_MATERIALIZED_VERSION}\0{config}".encode())
        for path in sorted(p for paths in files.values() for p in paths):
            digest.update(f"{path.relative_to(folder)}\0{path.stat().st_size}\0".encode())
            digest.update(_parquet_footer(path))
        rows = {split: _parquet_batches(paths) for split, paths in files.items()}
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", folder.name) or "folder"
        return cls(str(folder), slug, variant, config, digest.hexdigest(), rows)

    @classmethod
    def _from_hub(cls, hub_id: HubId, variant: str) -> _HubReader:
        import datasets

        config = _hub_default_config(hub_id) if variant == "nights" else VARIANT_CONFIGS[variant]
        try:
            builder = datasets.load_dataset_builder(
                hub_id.repo_id, config, revision=hub_id.revision
            )
            builder.download_and_prepare()
            prepared = builder.as_dataset()
        except (OSError, ValueError) as error:  # datasets: not found, offline, unreachable
            offline = (
                " (offline: HF_HUB_OFFLINE is set and it is not in the cache)"
                if (datasets.config.HF_HUB_OFFLINE)
                else ""
            )
            raise DatasetNotFoundError(
                f"{hub_id}: cannot load the {variant} config{offline}: {first_line(error)}"
            ) from None
        # For a Hub repository the builder's hash is the commit it read: a content key.
        key = hashlib.sha256(
            f"{_MATERIALIZED_VERSION}\0{hub_id.repo_id}\0{builder.config.name}\0"
            f"{builder.hash}".encode()
        ).hexdigest()
        rows = {
            split: table.data.table.to_batches(max_chunksize=_BATCH_ROWS)
            for split, table in prepared.items()
        }
        slug = hub_id.repo_id.replace("/", "--")
        return cls(str(hub_id), slug, variant, builder.config.name, key, rows)


def _parquet_batches(paths: list[Path]):
    """Record batches of Parquet files, read with pyarrow's file reader. (A ``datasets``
    streaming iterator left half-read, as an error here would leave it, aborts the interpreter
    at exit with its dataset scanner's thread still running: apache/arrow#45214.)"""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for path in paths:
        try:
            yield from pq.ParquetFile(path).iter_batches(batch_size=_BATCH_ROWS)
        except (OSError, pa.ArrowException) as error:
            raise IntegrityError(f"{path}: not a readable Parquet file ({error})") from None


def first_line(error: Exception) -> str:
    """An error's first line (its type when it has no text), for one-line messages."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _hub_default_config(hub_id: HubId) -> str | None:
    """The default config named by the repository's card (``datasets`` cannot choose among
    several cached configs offline); None leaves the choice, and its errors, to ``datasets``."""
    from huggingface_hub import hf_hub_download

    try:
        card = hf_hub_download(hub_id.repo_id, CARD, repo_type="dataset", revision=hub_id.revision)
        return default_config(read_card_configs(Path(card).parent))
    except Exception:  # a missing repository or card is reported by datasets just after
        return None


def _parquet_footer(path: Path) -> bytes:
    """The Parquet footer (schema, row groups, statistics): cheap to read, changes with the
    rows; the file size goes into the key beside it."""
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        if size < 12:
            raise IntegrityError(f"{path}: too short to be a Parquet file")
        handle.seek(size - 8)
        tail = handle.read(8)
        length = int.from_bytes(tail[:4], "little")
        if tail[4:] != b"PAR1" or length > size - 8:
            raise IntegrityError(f"{path}: not a Parquet file (no footer); write it again")
        handle.seek(size - 8 - length)
        return handle.read(length)


def _csv_value(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _write_release(reader: _HubReader, out: Path, progress: bool | None) -> None:
    """The config's rows as a release folder: CSV plus PNG files at their relative paths."""
    variant = reader.variant
    folder_name, csv_name = _RELEASE_DIRS[variant]
    image_root = out / folder_name
    csv_path = image_root / csv_name if csv_name else out / _paths.JND_CSV
    image_columns = IMAGES_OF_VARIANT[variant]
    written: dict[str, str] = {}
    records: list[dict] = []
    columns: list[str] | None = None
    bar = progress_bar(
        progress=progress, desc=f"reading {reader.label} ({reader.config})", unit="row"
    )
    with ThreadPoolExecutor(8) as pool:
        for split_name, batches in reader.rows.items():
            for batch in batches:
                names = batch.schema.names
                required = [name for c in image_columns for name in (c, f"{c}_path")]
                missing = [name for name in required if name not in names]
                if missing:
                    raise NightsError(
                        f"{reader.label}: config {reader.config!r}, split {split_name!r} lacks the "
                        f"column(s) {', '.join(missing)}; it was not written by `nights publish`"
                    )
                columns = columns or [c for c in names if c not in image_columns]
                tasks = []
                for row in batch.to_pylist():
                    for column in image_columns:
                        tasks.append(_checked_image(reader, row, column, row.pop(column), written))
                    records.append(row)
                # Creating many small files is bound by the file system's latency, not by bytes.
                list(pool.map(partial(_write_file, image_root), filter(None, tasks)))
                bar.update(batch.num_rows)
    bar.close()
    if not records:
        raise DatasetNotFoundError(f"{reader.label}: config {reader.config!r} has no rows")
    if variant == "nights":
        columns = list(DATA_CSV_COLUMNS)
    else:  # the tolerant readers fill absent optional columns with nulls, as the source had
        columns = [
            name
            for name in columns
            if name not in _OPTIONAL_COLUMNS or any(r.get(name) is not None for r in records)
        ]
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    image_root.mkdir(parents=True, exist_ok=True)
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows([_csv_value(record.get(name)) for name in columns] for record in records)


def _checked_image(reader, row: dict, column: str, storage, written) -> tuple | None:
    """``(where, relative path, bytes)`` of an image to write, None when that path is
    already written with the same bytes; a bad path or missing bytes is a NightsError."""
    relative = row.get(f"{column}_path")
    where = f"{reader.label}: config {reader.config!r}, id {row.get('id')}, {column}"
    try:
        relative = parse_relative_path(str(relative or ""))
        if "\x00" in relative:
            raise ValueError("contains a NUL character")
    except ValueError as reason:
        raise NightsError(f"{where}: path {relative!r} {reason}") from None
    data = storage.get("bytes") if isinstance(storage, dict) else None
    if not data or not isinstance(data, bytes):
        raise IntegrityError(f"{where}: no image bytes for {relative}")
    digest = hashlib.sha256(data).hexdigest()
    if relative in written:
        if written[relative] != digest:
            raise IntegrityError(f"{where}: two different images for the path {relative}")
        return None
    written[relative] = digest
    return where, relative, data


def _write_file(image_root: Path, task: tuple) -> None:
    where, relative, data = task
    target = image_root / relative
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    except OSError as error:  # e.g. a name too long, or a file where a folder must go
        raise NightsError(f"{where}: cannot write {relative!r} ({error.strerror})") from None
