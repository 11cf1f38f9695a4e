"""Writing a dataset repository folder in the Hub layout, and checking one."""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from .._files import file_lock, file_sha256, replace_folder, write_atomic
from .._progress import progress_bar
from ..errors import IntegrityError, NightsError
from ..hub import (
    CARD,
    DATA_DIR,
    HUB_FORMAT,
    IMAGES_OF_VARIANT,
    PROVENANCE,
    VARIANT_CONFIGS,
    default_config,
    first_line,
    read_card_configs,
)
from ..schema import SPLIT_VALUES, parse_relative_path
from ..table import VARIANTS, load_jnd, load_nights, resolve_source, table_meta

# Row groups: at most this many rows or bytes (datasets' own push_to_hub caps row groups at
# 100 MB, the viewer reads one group at a time); shards: about 500 MB, as datasets writes them.
ROW_GROUP_ROWS = 256
ROW_GROUP_BYTES = 100 << 20
SHARD_BYTES = 500 << 20
_READ_ROWS = 32
_FORMAT_VERSION = 1
_SPLIT_NAME = re.compile(r"^\w+(\.\w+)*$")
_CONFIG_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


@dataclass(frozen=True)
class SplitSet:
    """A folder written by :func:`nights.votes.write_split`, published as a config of its own.

    ``name`` defaults to the folder's name; on the command line ``NAME=PATH`` sets it.
    """

    path: Path
    name: str | None = None

    @classmethod
    def parse(cls, text: str) -> SplitSet:
        """``PATH`` or ``NAME=PATH``."""
        name, equals, path = text.partition("=")
        return cls(Path(path), name) if equals else cls(Path(text))

    @property
    def config_name(self) -> str:
        return self.name or re.sub(r"[^A-Za-z0-9_-]+", "_", self.path.resolve().name).strip("_")


@dataclass
class PublishResult:
    """What :func:`write_hub_folder` wrote: rows per config and split, files and bytes."""

    folder: Path
    configs: dict[str, dict[str, int]]
    files: int
    bytes: int

    def summary(self) -> str:
        lines = [f"{self.folder}: {self.files} Parquet file(s), {self.bytes / 1e6:.1f} MB"]
        for config, splits in self.configs.items():
            counts = ", ".join(f"{split} {rows:,}" for split, rows in splits.items())
            lines.append(f"  {config}: {counts}")
        return "\n".join(lines)


@dataclass
class _Config:
    """One config to write: its rows (a triplet or JND table) and where they came from."""

    name: str
    variant: str
    table: object
    provenance: dict
    reads: tuple[Path, ...]
    image_columns: tuple[str, ...] = field(default=())
    root: str | None = None  # the folder the table's relative paths start from

    def __post_init__(self):
        self.image_columns = tuple(
            c for c in IMAGES_OF_VARIANT[self.variant] if c in self.table.features
        )
        self.root = table_meta(self.table).get("root")


def write_hub_folder(
    out: str | os.PathLike,
    root: str | os.PathLike | None = None,
    *,
    variants: Sequence[str] | None = None,
    split_sets: Sequence[SplitSet | str | os.PathLike] = (),
    overwrite: bool = False,
    cache_dir: str | os.PathLike | None = None,
    progress: bool | None = None,
) -> PublishResult:
    """Writes a Hugging Face dataset repository folder of NIGHTS, with its votes.

    Args:
        out: the folder to create.
        root: the release (as for :func:`nights.load_nights`; default ``NIGHTS_HOME``).
        variants: which of ``nights`` (config ``default``), ``unfiltered`` and ``jnd`` to write;
            default: every one found at ``root``, or none when ``split_sets`` are given.
        split_sets: folders written by :func:`nights.votes.write_split` (``format`` nights or
            parquet, with ``provenance.json``), one config each, named after the folder (or
            ``SplitSet(path, name)``). Without a ``default`` config the first one is the default.
        overwrite: replace an existing ``out`` (once the new folder is complete).
        cache_dir: the table cache (default ``NIGHTS_HOME/tables``).
        progress: progress bars (default: when stderr is a terminal).

    Returns:
        A :class:`PublishResult` (rows per config and split, files, bytes).

    Layout: ``data/CONFIG/SPLIT-NNNNN-of-NNNNN.parquet`` (every column of the table; images as
    ``datasets`` Image features holding the original PNG bytes and the release-relative path;
    row groups of at most 256 rows or 100 MB, files of about 500 MB), ``provenance.json``
    (sources with their sha256, filters, rows, files with their sha256) and ``README.md``, the
    dataset card generated from it. Splits are the ``split`` column's values (rows without
    one, like the unfiltered and JND sets, form ``train``, the Hub's name for a single split).

    The folder is assembled beside ``out`` (``.OUT.partial``) and renamed into place when
    complete; an interrupted call, run again, keeps the shards it had finished. ``out`` may
    not be, contain or lie inside a folder it reads from.

    Example::

        >>> from nights.publish import validate_hub_folder, write_hub_folder
        >>> result = write_hub_folder(scratch / "hub", root=sample_root, progress=False)
        >>> sorted(result.configs), sum(result.configs["default"].values())
        (['default', 'jnd', 'unfiltered'], 120)
        >>> validate_hub_folder(scratch / "hub").files
        5
    """
    out = Path(out).expanduser()
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    configs = _gather_configs(root, variants, split_sets, cache_dir, progress)
    _refuse_own_source(out, configs)
    if out.exists():
        _refuse_foreign_folder(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(out.parent / f".{out.name}.lock"):
        partial = out.parent / f".{out.name}.partial"
        state = _ResumeState(partial, _resume_key(configs))
        written = {}
        for config in configs:
            written[config.name] = _write_config(config, partial, state, progress)
        provenance = _provenance(configs, written)
        (partial / PROVENANCE).write_text(json.dumps(provenance, indent=2))
        from ._card import render_card

        (partial / CARD).write_text(render_card(provenance), encoding="utf-8")
        state.clear()
        validate_hub_folder(partial, checksums=False)
        replace_folder(partial, out)
    files = [f for c in written.values() for s in c.values() for f in s["files"]]
    return PublishResult(
        out,
        {name: {split: info["rows"] for split, info in c.items()} for name, c in written.items()},
        len(files),
        sum(f["bytes"] for f in files),
    )


def _gather_configs(root, variants, split_sets, cache_dir, progress) -> list[_Config]:
    split_sets = [s if isinstance(s, SplitSet) else SplitSet(Path(s)) for s in split_sets]
    if variants is None:
        variants = [] if split_sets else [v for v in VARIANTS if _found(root, v)]
        if not variants and not split_sets:
            resolve_source(root, "nights")  # raises the usual "not found, download it" error
    unknown = [v for v in variants if v not in VARIANT_CONFIGS]
    if unknown:
        raise ValueError(f"variants must be among {', '.join(VARIANT_CONFIGS)}, not {unknown}")
    configs = [_release_config(root, v, cache_dir, progress) for v in dict.fromkeys(variants)]
    configs += [_split_set_config(s, cache_dir, progress) for s in split_sets]
    names = [c.name for c in configs]
    for name in names:
        if not _CONFIG_NAME.match(name):
            raise NightsError(f"config name {name!r}: use letters, digits, '-' and '_' (NAME=PATH)")
        if names.count(name) > 1:
            raise NightsError(f"two configs are named {name!r}; name split sets with NAME=PATH")
    return configs


def _found(root, variant: str) -> bool:
    from ..errors import DatasetNotFoundError

    try:
        resolve_source(root, variant)
        return True
    except DatasetNotFoundError:
        return False


def _release_config(root, variant: str, cache_dir, progress) -> _Config:
    source = resolve_source(root, variant)
    options = {"cache_dir": cache_dir, "progress": progress, "images": "path"}
    if variant == "jnd":
        table = load_jnd(root, **options)
    else:
        table = load_nights("all", root=root, variant=variant, min_votes=None, **options)
    provenance = {
        "kind": "release",
        "variant": variant,
        "source": {
            "file": source.csv_path.name,
            "sha256": table_meta(table)["csv"],
            "path": str(source.csv_path),
        },
        "filters": [],
        "images": "original",
    }
    reads = (source.image_root, source.csv_path.parent)
    return _Config(VARIANT_CONFIGS[variant], variant, table, provenance, reads)


def _split_set_config(split_set: SplitSet, cache_dir, progress) -> _Config:
    folder = split_set.path.expanduser().resolve()
    record_path = folder / "provenance.json"
    if not record_path.is_file():
        raise NightsError(
            f"{folder}: no provenance.json; a split set is a folder written by "
            "`nights filter --out` or nights.votes.write_split"
        )
    try:
        recorded = json.loads(record_path.read_text(encoding="utf-8"))
    except ValueError as error:  # not JSON, or not UTF-8
        raise NightsError(f"{record_path}: not JSON ({error})") from None
    if not isinstance(recorded, dict):
        raise NightsError(f"{record_path}: not a split set's record (a JSON object)")
    source = recorded.get("source") if isinstance(recorded.get("source"), dict) else {}
    variant = source.get("variant") if source.get("variant") in IMAGES_OF_VARIANT else "nights"
    image_size = source.get("image_size")
    if recorded.get("format") == "nights":
        table = load_nights(
            "all", root=folder, min_votes=None, cache_dir=cache_dir, progress=progress
        )
        variant, images = "nights", "original"
        own_csv = {"file": "data.csv", "sha256": table_meta(table)["csv"]}
    elif recorded.get("format") == "parquet":
        import datasets

        files = sorted(str(p) for p in (folder / "data").glob("*.parquet"))
        if not files:
            raise NightsError(f"{folder}/data: no Parquet file")
        table = datasets.Dataset.from_parquet(files)
        images = f"resized to {image_size} px" if image_size else "original"
        own_csv = None
    else:
        raise NightsError(f"{record_path}: unknown format {recorded.get('format')!r}")
    provenance = {
        "kind": "split_set",
        "variant": variant,
        "folder": str(folder),
        "source": {
            "file": Path(source.get("csv_path") or "data.csv").name,
            "sha256": source.get("csv"),
            "path": source.get("csv_path"),
        },
        "split_csv": own_csv,
        "filters": recorded.get("filters", []),
        "note": recorded.get("note"),
        "created": recorded.get("created"),
        "written_by": recorded.get("nights_version"),
        "images": images,
    }
    return _Config(split_set.config_name, variant, table, provenance, (folder,))


def _refuse_foreign_folder(out: Path) -> None:
    """Overwriting replaces ``out`` wholesale: only an empty folder or one that ``nights
    publish`` wrote (its provenance.json says so) may go."""
    if not out.is_dir():
        raise NightsError(f"{out} is a file, not a folder: choose another OUT")
    if not any(out.iterdir()):
        return
    try:
        written_by_us = json.loads((out / PROVENANCE).read_text())["format"] == HUB_FORMAT
    except (OSError, ValueError, TypeError, KeyError):
        written_by_us = False
    if not written_by_us:
        raise NightsError(
            f"{out} holds files that `nights publish` did not write (no {PROVENANCE} of a Hub "
            "folder); --overwrite replaces only its own folders: choose an empty or new OUT"
        )


def _refuse_own_source(out: Path, configs: list[_Config]) -> None:
    """``out`` is replaced wholesale: it must not be, hold or sit inside what it reads."""
    target = out.resolve()
    for config in configs:
        for source in config.reads:
            source = source.resolve()
            if target == source or target in source.parents or source in target.parents:
                raise NightsError(
                    f"{out} overlaps {source}, which config {config.name!r} reads from; "
                    "write the Hub folder somewhere outside the data it is made of"
                )


def _split_indices(table) -> dict[str, np.ndarray]:
    """Row positions per Hub split, in the table's order: train, val, test, then others."""
    if "split" in table.column_names:
        values = table.data.column("split").to_pylist()
        values = np.array(["train" if v is None else str(v) for v in values], dtype=object)
    else:
        values = np.array(["train"] * len(table), dtype=object)
    names = sorted(
        set(values), key=lambda s: (SPLIT_VALUES.index(s) if s in SPLIT_VALUES else 99, s)
    )
    for name in names:
        if not _SPLIT_NAME.match(name):
            raise NightsError(
                f"split {name!r} cannot name a Hub split (letters, digits, '_' and '.' only)"
            )
    return {name: np.flatnonzero(values == name) for name in names}


class _ResumeState:
    """Finished shards of an interrupted write, kept in the partial folder with a key of the
    inputs: the same call resumes, a different one starts again."""

    def __init__(self, partial: Path, key: str):
        self.partial, self.key, self.path = partial, key, partial / ".nights-progress.json"
        state = {}
        if self.path.is_file():
            try:
                state = json.loads(self.path.read_text())
            except json.JSONDecodeError:
                state = {}
        if state.get("key") != key:
            shutil.rmtree(partial, ignore_errors=True)
            state = {"key": key, "splits": {}}
        partial.mkdir(parents=True, exist_ok=True)
        self.state = state

    def split(self, config: str, split: str) -> dict:
        return self.state["splits"].get(f"{config}/{split}", {"files": [], "complete": False})

    def save(self, config: str, split: str, record: dict) -> None:
        self.state["splits"][f"{config}/{split}"] = record
        write_atomic(self.path, json.dumps(self.state))

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def _resume_key(configs: list[_Config]) -> str:
    import hashlib

    from .. import __version__

    described = [
        [c.name, c.variant, c.provenance["source"], c.provenance["filters"], len(c.table)]
        for c in configs
    ]
    limits = [ROW_GROUP_ROWS, ROW_GROUP_BYTES, SHARD_BYTES, _FORMAT_VERSION, __version__]
    text = json.dumps([described, limits], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _write_config(config: _Config, partial: Path, state: _ResumeState, progress) -> dict:
    folder = partial / DATA_DIR / config.name
    folder.mkdir(parents=True, exist_ok=True)
    schema = config.table.features.arrow_schema
    arrow = config.table.with_format("arrow")
    written = {}
    votes = (  # per triplet; JND counts are per pair
        np.array([-1 if v is None else v for v in config.table.data.column("votes").to_pylist()])
        if "votes" in config.table.column_names and config.variant != "jnd"
        else None
    )
    bar = progress_bar(
        total=len(config.table), progress=progress, desc=f"writing {config.name}", unit="row"
    )
    for split, indices in _split_indices(config.table).items():
        record = state.split(config.name, split)
        done = sum(f["rows"] for f in record["files"])
        bar.update(done)
        if not record["complete"]:
            shards = _ShardWriter(folder, split, schema, record, state, config.name)
            for start in range(done, len(indices), _READ_ROWS):
                chunk = arrow[indices[start : start + _READ_ROWS].tolist()]
                shards.add(_with_image_bytes(chunk, config))
                bar.update(chunk.num_rows)
            shards.close()
        written[split] = {"rows": len(indices), "files": record["files"]}
        if votes is not None:
            written[split]["votes_ge_6"] = int((votes[indices] >= 6).sum())
    bar.close()
    _number_shards(folder, written)
    return written


class _ShardWriter:
    """Parquet files of one split: row groups of ``ROW_GROUP_ROWS`` rows or
    ``ROW_GROUP_BYTES``, a new file past ``SHARD_BYTES``; each finished file is recorded."""

    def __init__(self, folder, split, schema, record, state, config):
        self.folder, self.split, self.schema = folder, split, schema
        self.record, self.state, self.config = record, state, config
        self.buffer: pa.Table | None = None
        self.writer = None
        self.rows = 0

    def add(self, table: pa.Table) -> None:
        # Rows per group from this chunk's size (measuring the growing buffer costs more).
        row_bytes = max(1.0, table.nbytes / max(1, table.num_rows))
        rows = max(1, min(ROW_GROUP_ROWS, int(ROW_GROUP_BYTES // row_bytes)))
        self.buffer = table if self.buffer is None else pa.concat_tables([self.buffer, table])
        while self.buffer.num_rows >= rows:
            self._write_group(self.buffer.slice(0, rows))
            self.buffer = self.buffer.slice(rows)

    def _write_group(self, group: pa.Table) -> None:
        import pyarrow.parquet as pq

        if self.writer is None:
            self.path = self.folder / f".{self.split}-{len(self.record['files']):05d}.parquet.tmp"
            self.writer = pq.ParquetWriter(self.path, self.schema)
        self.writer.write_table(group, row_group_size=group.num_rows)
        self.rows += group.num_rows
        if self.path.stat().st_size >= SHARD_BYTES:
            self._finish_file()

    def _finish_file(self) -> None:
        self.writer.close()
        name = f"{self.split}-{len(self.record['files']):05d}.parquet"
        os.replace(self.path, self.folder / name)
        self.record["files"].append(
            {
                "path": name,
                "rows": self.rows,
                "bytes": (self.folder / name).stat().st_size,
                "sha256": file_sha256(self.folder / name),
            }
        )
        self.state.save(self.config, self.split, self.record)
        self.writer, self.rows = None, 0

    def close(self) -> None:
        if self.buffer is not None and self.buffer.num_rows:
            self._write_group(self.buffer)
        if self.writer is not None:
            self._finish_file()
        self.record["complete"] = True
        self.state.save(self.config, self.split, self.record)


def _with_image_bytes(chunk: pa.Table, config: _Config) -> pa.Table:
    """The chunk with each image cell holding the original PNG bytes and the relative path."""
    for column in config.image_columns:
        relatives = chunk.column(f"{column}_path").to_pylist()
        values = [
            {
                "bytes": _image_bytes(storage, relative, config.root, row_id, column),
                "path": relative,
            }
            for storage, relative, row_id in zip(
                chunk.column(column).to_pylist(), relatives, chunk.column("id").to_pylist()
            )
        ]
        position = chunk.schema.get_field_index(column)
        field = chunk.schema.field(position)
        chunk = chunk.set_column(position, field, pa.array(values, field.type))
    return chunk


def _image_bytes(storage: dict | None, relative: str, root: str | None, row_id, column) -> bytes:
    """The stored bytes, else the file the table points at, else the file under the root."""
    if storage and storage.get("bytes") is not None:
        return storage["bytes"]
    for path in (storage and storage.get("path"), root and os.path.join(root, relative)):
        if path:
            try:
                with open(path, "rb") as handle:
                    return handle.read()
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                continue
    raise IntegrityError(
        f"id {row_id}, {column}: {relative} is not reachable (looked in {root}); "
        "restore the release (the download resumes) and publish again"
    )


def _number_shards(folder: Path, written: dict) -> None:
    """``SPLIT-NNNNN.parquet`` becomes ``SPLIT-NNNNN-of-NNNNN.parquet`` (the Hub's naming);
    a file an interruption left half written goes."""
    for leftover in folder.glob(".*.parquet.tmp"):
        leftover.unlink()
    for split, info in written.items():
        count = len(info["files"])
        for number, entry in enumerate(info["files"]):
            final = f"{split}-{number:05d}-of-{count:05d}.parquet"
            if entry["path"] != final and (folder / entry["path"]).exists():
                os.replace(folder / entry["path"], folder / final)
            entry["path"] = final
        info["files"] = [
            {**entry, "path": f"{DATA_DIR}/{folder.name}/{entry['path']}"}
            for entry in info["files"]
        ]


def _provenance(configs: list[_Config], written: dict) -> dict:
    from .. import __version__

    names = [c.name for c in configs]
    default = "default" if "default" in names else names[0]
    return {
        "format": HUB_FORMAT,
        "format_version": _FORMAT_VERSION,
        "nights_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "default_config": default,
        "configs": {
            config.name: {
                **config.provenance,
                "features": config.table.features.to_dict(),
                "rows": sum(split["rows"] for split in written[config.name].values()),
                "splits": written[config.name],
            }
            for config in configs
        },
    }


# -- checking a folder --


@dataclass
class HubCheck:
    """What :func:`validate_hub_folder` found: configs with rows per split, files checked."""

    folder: Path
    configs: dict[str, dict[str, int]]
    files: int


def validate_hub_folder(folder: str | os.PathLike, *, checksums: bool = True) -> HubCheck:
    """Checks that ``datasets`` will read a Hub folder as it was written, before it is pushed.

    Checks: the card's YAML parses (``huggingface_hub.DatasetCard``) and declares the configs
    of ``provenance.json``; each config's ``data_files`` patterns match exactly the files
    recorded for each split; each file is a Parquet file with the recorded rows (and, with
    ``checksums``, sha256); the card's ``dataset_info`` counts equal the rows; ids are unique
    per config (per reference/distortion pair for ``jnd``); ``datasets`` resolves each config
    (``load_dataset_builder``, as ``load_dataset`` starts) to exactly those files per split,
    with Image features, and each file's columns decode to the card's features.

    Raises:
        IntegrityError: listing every problem found, each with its file.
    """
    import pyarrow.parquet as pq

    folder = Path(folder)
    problems: list[str] = []
    record_path = folder / PROVENANCE
    try:
        provenance = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:  # ValueError: not JSON, or not UTF-8
        raise IntegrityError(
            f"{record_path}: cannot be read ({error}); write the folder again"
        ) from None
    if not isinstance(provenance, dict) or provenance.get("format") != HUB_FORMAT:
        raise IntegrityError(f"{record_path}: not a Hub folder written by `nights publish`")
    try:
        declared = read_card_configs(folder)
    except NightsError as error:
        raise IntegrityError(str(error)) from None
    recorded = _recorded_configs(provenance, record_path)
    if set(declared) != set(recorded):
        problems.append(
            f"{folder / CARD}: configs {sorted(declared)} differ from those of "
            f"{PROVENANCE} ({sorted(recorded)})"
        )
    try:
        default = default_config(declared)
    except ValueError as error:
        default = None
        problems.append(f"{folder / CARD}: {error}")
    if default != provenance.get("default_config"):
        problems.append(
            f"{folder / CARD}: the default config is not {provenance.get('default_config')!r}"
        )
    card_counts = _card_counts(folder)
    counts: dict[str, dict[str, int]] = {}
    files_checked = 0
    for name, config in recorded.items():
        resolved, features = _resolve_like_datasets(folder, name, config, problems)
        counts[name] = {}
        keys: list = []
        for split, info in config.get("splits", {}).items():
            counts[name][split] = info["rows"]
            listed = sorted(entry["path"] for entry in info["files"])
            if resolved is not None and resolved.get(split) != listed:
                problems.append(
                    f"{name}/{split}: datasets resolves the card's data_files to "
                    f"{resolved.get(split)}, {PROVENANCE} lists {listed}"
                )
            rows = 0
            for entry in info["files"]:
                path = folder / entry["path"]
                files_checked += 1
                try:
                    metadata = pq.read_metadata(path)
                    schema = pq.read_schema(path)
                except (OSError, pa.ArrowInvalid) as error:
                    problems.append(f"{path}: not a readable Parquet file ({first_line(error)})")
                    continue
                rows += metadata.num_rows
                if metadata.num_rows != entry["rows"] or path.stat().st_size != entry["bytes"]:
                    problems.append(f"{path}: rows or size differ from {PROVENANCE}")
                elif checksums and file_sha256(path) != entry["sha256"]:
                    problems.append(f"{path}: sha256 differs from {PROVENANCE} (changed since)")
                if features is not None and _features_of(schema) != features:
                    problems.append(f"{path}: its columns differ from the card's features")
                key_columns = (
                    ["ref_path", "distort_path"] if config.get("variant") == "jnd" else ["id"]
                )
                keys.extend(zip(*pq.read_table(path, columns=key_columns).to_pydict().values()))
            if rows != info["rows"]:
                problems.append(
                    f"{name}/{split}: {rows} rows in the files, {info['rows']} recorded"
                )
            if card_counts.get(name, {}).get(split) != info["rows"]:
                problems.append(
                    f"{folder / CARD}: dataset_info gives {name}/{split} "
                    f"{card_counts.get(name, {}).get(split)} rows, the files hold {info['rows']}"
                )
        if len(set(keys)) != len(keys):
            problems.append(f"{name}: {len(keys) - len(set(keys))} repeated id(s)")
    if problems:
        more = f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
        raise IntegrityError(
            f"{folder} fails {len(problems)} check(s): "
            + "; ".join(problems[:5])
            + more
            + ". Write it again with `nights publish --overwrite`"
        )
    return HubCheck(folder, counts, files_checked)


def _recorded_configs(provenance: dict, record_path: Path) -> dict:
    """The configs of a Hub folder's provenance.json, once sure they hold what the checks
    read: splits, each with a count of rows and its files (a relative path, rows, bytes and
    sha256 each)."""

    def damaged(what: str):
        return IntegrityError(f"{record_path}: {what}; write the folder again")

    def count(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    configs = provenance.get("configs", {})
    if not isinstance(configs, dict):
        raise damaged("'configs' is not a mapping of config names")
    for name, config in configs.items():
        splits = config.get("splits", {}) if isinstance(config, dict) else None
        if not isinstance(splits, dict):
            raise damaged(f"config {name!r} has no mapping of splits")
        variant = config.get("variant")
        if variant is not None and not (isinstance(variant, str) and variant in IMAGES_OF_VARIANT):
            raise damaged(f"config {name!r}: variant {variant!r} is not one nights writes")
        for split, info in splits.items():
            files = info.get("files") if isinstance(info, dict) else None
            if not isinstance(files, list) or not count(info.get("rows")):
                raise damaged(f"{name}/{split} has no list of files and count of rows")
            for entry in files:
                path = entry.get("path") if isinstance(entry, dict) else None
                complete = isinstance(path, str) and isinstance(entry.get("sha256"), str)
                if not (complete and count(entry.get("rows")) and count(entry.get("bytes"))):
                    raise damaged(f"{name}/{split}: a file without path, rows, bytes and sha256")
                try:
                    parse_relative_path(path)
                except ValueError as reason:
                    raise damaged(f"{name}/{split}: file {path!r} {reason}") from None
    return configs


def _card_counts(folder: Path) -> dict[str, dict[str, int]]:
    from datasets.info import DatasetInfosDict
    from huggingface_hub import DatasetCard

    infos = DatasetInfosDict.from_dataset_card_data(DatasetCard.load(folder / CARD).data)
    return {
        name: {split.name: split.num_examples for split in (info.splits or {}).values()}
        for name, info in infos.items()
    }


def _resolve_like_datasets(folder: Path, name: str, config: dict, problems: list):
    """The files of each split and the features of a config, as ``datasets`` resolves them
    from the card (``load_dataset_builder``: no row is read); ``(None, None)`` and a problem
    when it cannot."""
    import datasets

    try:
        builder = datasets.load_dataset_builder(str(folder), name)
    except Exception as error:  # whatever fails here is what a Hub user would see
        problems.append(f"datasets cannot open config {name!r}: {first_line(error)}")
        return None, None
    resolved = {
        split: sorted(Path(os.path.relpath(path, folder)).as_posix() for path in paths)
        for split, paths in (builder.config.data_files or {}).items()
    }
    features = builder.info.features
    for column in IMAGES_OF_VARIANT.get(config.get("variant"), ()):
        if type((features or {}).get(column)).__name__ != "Image":
            problems.append(f"{name}: datasets would not read {column!r} as an Image")
    return resolved, features


def _features_of(schema: pa.Schema):
    from datasets import Features

    return Features.from_arrow_schema(schema)
