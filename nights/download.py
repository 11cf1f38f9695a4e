"""Downloading NIGHTS releases: whole, or only the images of a split or a list of ids.

``download("chunked", root)`` fetches what is missing, in parallel, verifies sizes and zip
CRCs, extracts each archive into a temporary folder and moves the files into place, records the
sha256 of every file it produced (``root/.nights-download/done/*.json``: the manifest that
``nights verify`` checks), and deletes each archive once extracted. Interrupted at any point
(Ctrl-C, kill -9), the same call finishes the job without fetching finished files again.

After any download, ``root/nights`` is a folder that :func:`nights.load_nights` and upstream's
loader read directly. Example (``mirror_url`` serves the release as upstream's host does, the
default)::

    >>> from nights.download import download
    >>> report = download("chunked", scratch, base_url=mirror_url, progress=False)
    >>> report.files_produced > 200, (scratch / "nights" / "data.csv").is_file()
    (True, True)
    >>> test_only = download("full", scratch / "t", split="test", base_url=mirror_url)
    >>> print(test_only.summary())  # the test triplets' images only, out of nights.zip
    full (test) -> .../t
      fetch ... 30 triplets, 90 of 90 images missing, out of a 1.7 MB archive
    to fetch: ... KB
    received ... KB in ... s; 91 file(s) written
"""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from . import _paths
from ._files import file_lock, file_sha256, write_atomic
from ._progress import progress_bar
from .errors import ArgumentError, DownloadError, IntegrityError
from .releases import CSV_IN_FULL_ZIP, FULL_ZIP, RELEASES, ReleaseFile, file_url
from .remote_zip import RemoteZip
from .schema import read_data_csv, split_mask
from .transfer import FileDownload, HttpClient, RemoteInfo

logger = logging.getLogger(__name__)

STATE_DIR = ".nights-download"
_SPACE_MARGIN = 1 << 30
# Archives this large have their central directory read before they are fetched, so that a
# download that cannot be extracted stops before it starts (a few KB of ~2 requests each).
_DIRECTORY_FIRST_BYTES = 64 << 20


@dataclass
class DownloadReport:
    """What a :func:`download` call did (or, with ``dry_run``, would do)."""

    variant: str
    root: Path
    planned: list[tuple[str, int | None, str]] = field(default_factory=list)
    bytes_to_fetch: int = 0
    bytes_received: int = 0
    files_produced: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        lines = [f"{self.variant} -> {self.root}"]
        for path, size, status in self.planned:
            lines.append(f"  {status:<10} {_human(size):>10}  {path}")
        lines.append(f"to fetch: {_human(self.bytes_to_fetch)}")
        if self.seconds:
            lines.append(
                f"received {_human(self.bytes_received)} in {self.seconds:.1f} s; "
                f"{self.files_produced} file(s) written"
            )
        return "\n".join(lines)


def _human(size: int | None) -> str:
    if size is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return str(size)


# -- bookkeeping: lock, done records (the manifest), atomic writes --


@contextlib.contextmanager
def _exclusive(root: Path) -> Iterator[None]:
    """One download at a time in ``root``: a second one stops at once, naming the first."""
    from filelock import Timeout

    state = root / STATE_DIR
    lock = file_lock(state / "lock", wait=False)
    try:
        lock.acquire()
    except Timeout:
        owner = state / "owner"
        raise DownloadError(
            f"another download is running in {root} "
            f"({owner.read_text().strip() if owner.is_file() else 'pid unknown'}); wait for "
            "it or stop it, then run again"
        ) from None
    try:
        write_atomic(state / "owner", f"pid {os.getpid()}")
        yield
    finally:
        lock.release()


def _record_path(root: Path, name: str) -> Path:
    return root / STATE_DIR / "done" / f"{name}.json"


def _write_record(root: Path, name: str, source: str, files: dict[str, dict], **extra) -> None:
    """Records what one unit of work produced; ``sequence`` orders records that overlap
    (``nights/data.csv`` is rewritten by subset downloads)."""
    record = {"source": source, "files": files, "sequence": time.time_ns(), **extra}
    write_atomic(_record_path(root, name), json.dumps(record, indent=1, sort_keys=True))


def read_manifest(root: str | os.PathLike) -> dict[str, dict]:
    """Every file the downloads under ``root`` produced: ``{relative path: {sha256, size}}``."""
    done = Path(root) / STATE_DIR / "done"
    records = [json.loads(p.read_text()) for p in done.glob("*.json")] if done.is_dir() else []
    manifest: dict[str, dict] = {}
    for record in sorted(records, key=lambda r: r["sequence"]):
        manifest.update(record["files"])
    return manifest


def check_manifest(root: str | os.PathLike, checksums: bool = True) -> list[str]:
    """Files of the manifest that are missing or differ (size, and sha256 with ``checksums``)."""
    root = Path(root)
    problems = []
    for relative, expected in sorted(read_manifest(root).items()):
        path = root / relative
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif path.stat().st_size != expected["size"]:
            problems.append(
                f"{path}: {path.stat().st_size} bytes, manifest says {expected['size']}"
            )
        elif checksums and file_sha256(path) != expected["sha256"]:
            problems.append(f"{path}: sha256 differs from the manifest")
    return problems


def _place(data_or_path: bytes | Path, target: Path) -> dict:
    """Writes bytes, or moves a finished file, to ``target`` atomically; returns its record."""
    if isinstance(data_or_path, bytes):
        write_atomic(target, data_or_path)
        return {"sha256": hashlib.sha256(data_or_path).hexdigest(), "size": len(data_or_path)}
    record = {"sha256": file_sha256(data_or_path), "size": data_or_path.stat().st_size}
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(data_or_path, target)
    return record


class _Unreadable(Exception):
    """The archive (or one member) is corrupt or unsafe; the message says why."""


class _Unwritable(Exception):
    """A member cannot be written where it belongs (not for want of space)."""


def _open_zip(archive: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(archive)
    # zipfile meets damaged data with many types (BadZipFile, a CRC, zlib.error, EOFError,
    # NotImplementedError for an unknown method ...): all mean the archive cannot be read.
    except Exception as error:
        raise _Unreadable(str(error)) from None


def _safe_member_path(name: str, target_folder: str) -> str | None:
    """The member's path under the download root, or None for folder entries.

    Chunk archives hold ``NNN/...``; if one holds ``ref/NNN/...`` instead (the layout is not
    published), the repeated folder name is dropped.
    """
    parts = PurePosixPath(name).parts
    if name.endswith("/") or not parts:
        return None
    if PurePosixPath(name).is_absolute() or ".." in parts or "\0" in name:
        raise _Unreadable(f"member {name!r} would be written outside the folder")
    if target_folder and parts[0] == PurePosixPath(target_folder).name and len(parts) > 1:
        parts = parts[1:]
    return str(PurePosixPath(target_folder, *parts))


def _members(opened: zipfile.ZipFile, target_folder: str) -> list[tuple[zipfile.ZipInfo, str]]:
    """``(info, path under the root)`` of every file member, once sure that none escapes the
    folder and that no two clash (a name twice, or a file where another member needs a
    folder)."""
    members, folders = [], set()
    for info in opened.infolist():
        relative = _safe_member_path(info.filename, target_folder)
        if relative is not None:
            members.append((info, relative))
            folders.update(str(parent) for parent in PurePosixPath(relative).parents)
    files: set[str] = set()
    for info, relative in members:
        if relative in folders or relative in files:
            raise _Unreadable(f"member {info.filename!r} clashes with another member's name")
        files.add(relative)
    return members


def _check_disk_clashes(members: list[tuple[zipfile.ZipInfo, str]], root: Path) -> None:
    """No member needs a folder where a file is on disk, or is a file where a folder is."""
    for info, relative in members:
        try:
            parents = [root / p for p in PurePosixPath(relative).parents if p.name]
            blocking = next((p for p in parents if p.is_file()), None)
            if blocking is None and (root / relative).is_dir():
                blocking = root / relative
        except OSError as error:  # a name the file system refuses (too long ...)
            raise _Unwritable(f"member {info.filename!r}: {error.strerror}") from None
        if blocking is not None:
            raise _Unwritable(
                f"member {info.filename!r} clashes with {blocking} (a file where a folder "
                "is needed, or a folder where a file is)"
            )


def _write_member(opened: zipfile.ZipFile, info: zipfile.ZipInfo, staging: Path) -> dict:
    """Writes one member (CRC-checked by zipfile at its end); returns its record."""
    digest, size = hashlib.sha256(), 0
    try:
        staging.parent.mkdir(parents=True, exist_ok=True)
        with open(staging, "wb") as out, _open_member(opened, info) as member:
            while block := _read_block(member, info):
                digest.update(block)
                size += len(block)
                out.write(block)
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise _Unwritable(f"member {info.filename!r}: {error.strerror or error}") from None
    if size != info.file_size:  # zipfile checks the CRC, not the length
        raise _Unreadable(
            f"member {info.filename!r}: {size} bytes where the directory declares {info.file_size}"
        )
    return {"sha256": digest.hexdigest(), "size": size}


def _open_member(opened: zipfile.ZipFile, info: zipfile.ZipInfo):
    try:
        return opened.open(info)
    except Exception as error:  # as in _open_zip: a bad local header, an unknown method ...
        raise _Unreadable(f"member {info.filename!r}: {error}") from None


def _read_block(member, info: zipfile.ZipInfo) -> bytes:
    try:
        return member.read(1 << 20)
    except Exception as error:  # as in _open_zip: the member's data cannot be read
        raise _Unreadable(f"member {info.filename!r}: {error}") from None


def _check_room(root: Path, needed: int, what: str) -> None:
    free = shutil.disk_usage(root).free
    if needed > free:
        raise DownloadError(
            f"not enough free space in {root} to extract {what}: {_human(needed)} needed "
            f"(as its central directory declares), {_human(free)} free. Free some space and run "
            "the same command again (the archive is kept)"
        )


def _extract(archive: Path, target_folder: str, root: Path, what: str, url: str) -> dict[str, dict]:
    """Extracts with CRC checks into a temporary folder, then moves each file into place.

    Nothing is placed unless every member was read and written. One error names the archive,
    its URL and the member: a corrupt or unsafe archive is deleted (a rerun fetches it anew),
    one that cannot be written (a clash with files on disk) is kept.
    """
    records = {}
    scratch = Path(tempfile.mkdtemp(prefix=f"extract-{archive.name}-", dir=root / STATE_DIR))
    try:
        with _open_zip(archive) as opened:
            members = _members(opened, target_folder)
            _check_disk_clashes(members, root)
            _check_room(root, sum(info.file_size for info, _ in members), what)
            for info, relative in members:
                records[relative] = _write_member(opened, info, scratch / relative)
        for relative in records:
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            os.replace(scratch / relative, root / relative)
    except _Unreadable as error:
        archive.unlink(missing_ok=True)
        raise IntegrityError(
            f"{what}: the archive is corrupt or unsafe ({error}); URL {url}. It was deleted: "
            "run the same command again to fetch it anew"
        ) from None
    except _Unwritable as error:
        raise IntegrityError(
            f"{what}: cannot be extracted into {root} ({error}); URL {url}. The archive is "
            "kept: fix that, then run the same command again"
        ) from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return records


@dataclass(frozen=True)
class _Session:
    """What every step of one :func:`download` call shares."""

    client: HttpClient
    root: Path
    jobs: int
    base_url: str | None
    dry_run: bool
    progress: bool | None

    def url(self, release_path: str) -> str:
        return file_url(release_path, self.base_url)

    def bytes_bar(self, total: int, description: str, **options):
        """A progress bar counting bytes, with rate and ETA."""
        return progress_bar(
            total=total,
            progress=self.progress,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=description,
            **options,
        )


def _unpacked_bytes(archive: Path) -> int | None:
    """What a local archive's members take once extracted; None when it cannot be read."""
    try:
        with zipfile.ZipFile(archive) as opened:
            return sum(info.file_size for info in opened.infolist())
    except Exception:  # extraction reports it, with the archive and its URL
        return None


@contextlib.contextmanager
def _disk_full_reported(root: Path, needed: int) -> Iterator[None]:
    """A full disk (ENOSPC, or a quota) becomes one DownloadError naming the folder and the
    bytes needed. What was extracted in part is already gone; what was fetched stays, since a
    rerun resumes it."""
    try:
        yield
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise DownloadError(
            f"the disk of {root} is full ({_human(shutil.disk_usage(root).free)} free): this "
            f"download needs {_human(needed)} there. Free some space and run the same command "
            "again: the files already fetched are kept, the unfinished extraction was removed"
        ) from None


# -- whole releases --


def _probe(session: _Session, files: list[ReleaseFile]) -> list[RemoteInfo]:
    with ThreadPoolExecutor(session.jobs) as pool:
        return list(pool.map(lambda f: session.client.info(session.url(f.path), f.path), files))


def _space_needed(client, release_file: ReleaseFile, info: RemoteInfo, staging: Path) -> int:
    """What one release file takes on disk once extracted, counted before fetching it: an
    archive's members as its central directory declares them, read from the local copy when
    it is complete, else by Range requests for an archive of :data:`_DIRECTORY_FIRST_BYTES`
    or more. A smaller archive (or one on a server without Range) counts its own size here;
    extraction checks its directory before writing anything."""
    if not release_file.is_archive:
        return 0
    if staging.is_file():
        return _unpacked_bytes(staging) or 0
    if info.accepts_ranges and (info.size or 0) >= _DIRECTORY_FIRST_BYTES:
        return RemoteZip(client, info.url, release_file.path, info=info).unpacked_bytes()
    return info.size or 0


def _check_space(root: Path, needed: int) -> None:
    free = shutil.disk_usage(root).free
    if needed + _SPACE_MARGIN > free:
        raise DownloadError(
            f"not enough free space in {root}: {_human(needed)} needed (download plus "
            f"extraction) and 1 GB spare, {_human(free)} free. Free some space or choose "
            "another --root (the parts already fetched are kept)"
        )


def _fetch_unit(
    session: _Session, release_file: ReleaseFile, info: RemoteInfo, keep_archives: bool, bar
) -> int:
    """Downloads one release file, extracts it when it is an archive, records the result."""
    root = session.root
    staging = root / STATE_DIR / "files" / release_file.name
    fetched = FileDownload(
        session.client,
        info.url,
        staging,
        release_file.path,
        segments=session.jobs,
        on_bytes=bar.update,
    ).run(info)
    if release_file.is_archive:
        records = _extract(fetched, release_file.target, root, release_file.path, info.url)
    else:
        records = {release_file.target: _place(fetched, root / release_file.target)}
    _write_record(root, release_file.name, info.url, records)
    if release_file.is_archive and not keep_archives:
        fetched.unlink(missing_ok=True)
    return len(records)


def _fetch_csv_from_full_zip(session: _Session) -> int:
    """data.csv out of nights.zip by Range requests (the chunked release lacks it)."""
    remote = RemoteZip(session.client, session.url(FULL_ZIP), FULL_ZIP)
    record = _place(remote.read(CSV_IN_FULL_ZIP), session.root / "nights" / "data.csv")
    source = f"{remote.url}#{CSV_IN_FULL_ZIP}"
    _write_record(session.root, "data.csv", source, {"nights/data.csv": record})
    return 1


def download(
    variant: str = "chunked",
    root: str | os.PathLike | None = None,
    *,
    split: str | None = None,
    ids: list[int] | None = None,
    jobs: int = 8,
    base_url: str | None = None,
    dry_run: bool = False,
    keep_archives: bool = False,
    progress: bool | None = None,
    client: HttpClient | None = None,
) -> DownloadReport:
    """Fetches a release (see :data:`nights.releases.RELEASES`) into ``root``.

    Args:
        variant: ``full``, ``chunked``, ``unfiltered``, ``jnd`` or ``csv``.
        root: the download root (default ``NIGHTS_HOME``); the 20k release lands in
            ``root/nights``.
        split / ids: fetch only the images of these triplets (``full``/``chunked``/``csv``),
            read out of ``nights.zip`` with coalesced Range requests.
        jobs: simultaneous connections.
        base_url: a mirror (default ``$NIGHTS_BASE_URL`` or upstream's host).
        dry_run: report what would be fetched and how many bytes; change nothing.
        keep_archives: keep the zips after extraction (default: deleted once extracted).

    Raises:
        DownloadError: a file is missing on the server (file and URL named), the server keeps
            failing, another download holds the folder, or disk space is short: before the
            transfer (archives counted as their central directories declare), before an
            extraction, or when the disk fills up (folder and bytes needed named; what was
            fetched is kept, a half-done extraction removed).
        IntegrityError: an archive is corrupt or unsafe (a CRC, a member escaping the folder
            or clashing with another: archive, URL and member named; it is deleted so that a
            rerun refetches it), or clashes with files on disk.
    """
    if variant not in RELEASES:
        raise ArgumentError(f"variant must be one of {', '.join(RELEASES)}, not {variant!r}")
    root = Path(root).expanduser() if root is not None else _paths.nights_home()
    root.mkdir(parents=True, exist_ok=True)
    session = _Session(
        client=client or HttpClient(connections=jobs),
        root=root,
        jobs=jobs,
        base_url=base_url,
        dry_run=dry_run,
        progress=progress,
    )
    started = time.monotonic()
    with _exclusive(root):
        if split is not None or ids is not None:
            report = _download_subset(session, variant, split, ids)
        else:
            report = _download_release(session, variant, keep_archives)
    report.bytes_received = session.client.bytes_received
    report.seconds = 0.0 if dry_run else time.monotonic() - started
    return report


def _download_release(session: _Session, variant: str, keep_archives: bool) -> DownloadReport:
    root, client, jobs = session.root, session.client, session.jobs
    release = RELEASES[variant]
    report = DownloadReport(variant, root)
    todo = [f for f in release.files if not _record_path(root, f.name).exists()]
    for done in (f for f in release.files if f not in todo):
        report.planned.append((done.path, None, "done"))
    infos = _probe(session, todo) if todo else []
    unpack = 0
    for release_file, info in zip(todo, infos):
        staging = root / STATE_DIR / "files" / release_file.name
        remaining = FileDownload(client, info.url, staging, release_file.path).remaining_bytes(info)
        partial = remaining is not None and info.size is not None and remaining < info.size
        report.planned.append((release_file.path, info.size, "resume" if partial else "fetch"))
        report.bytes_to_fetch += remaining or 0
    needs_csv = variant in ("chunked", "csv") and not _record_path(root, "data.csv").exists()
    if needs_csv:
        report.planned.append((f"{FULL_ZIP}#{CSV_IN_FULL_ZIP}", None, "fetch"))
    if session.dry_run:
        return report
    with ThreadPoolExecutor(jobs) as pool:
        unpack = sum(
            pool.map(
                lambda pair: _space_needed(
                    client, *pair, root / STATE_DIR / "files" / pair[0].name
                ),
                zip(todo, infos),
            )
        )
    needed = report.bytes_to_fetch + unpack
    _check_space(root, needed)
    # Largest first, so that no big file starts last and finishes alone; each file may also be
    # split into ranges (8 MB at least), all within the client's cap of `jobs` connections.
    order = sorted(zip(todo, infos), key=lambda pair: -(pair[1].size or 0))
    with (
        session.bytes_bar(report.bytes_to_fetch, f"nights {variant}", smoothing=0.1) as bar,
        ThreadPoolExecutor(max(1, min(jobs, len(todo)))) as pool,
        _disk_full_reported(root, needed),
    ):
        futures = [
            pool.submit(_fetch_unit, session, f, info, keep_archives, bar) for f, info in order
        ]
        report.files_produced = sum(future.result() for future in futures)
    if needs_csv:
        with _disk_full_reported(root, needed):
            report.files_produced += _fetch_csv_from_full_zip(session)
    return report


# -- a split or a list of ids, out of nights.zip --


def _select_rows(frame, split: str | None, ids: list[int] | None):
    if split is not None:
        frame = frame[split_mask(split, frame["split"], frame["is_imagenet"])]
    if ids is not None:
        frame = frame[frame["id"].isin(set(ids))]
    return frame


def _subset_csv(full_csv: Path, frame, nights: Path) -> bytes:
    """data.csv with the rows whose three images are all present (earlier subsets included),
    so that the folder loads as it is, here and in upstream's loader."""
    present = {
        identifier
        for identifier, *paths in zip(
            frame["id"], frame["ref_path"], frame["left_path"], frame["right_path"]
        )
        if all((nights / path).is_file() for path in paths)
    }
    with open(full_csv, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        id_column = header.index("id")
        kept = [row for row in reader if row and int(float(row[id_column])) in present]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(kept)
    return buffer.getvalue().encode("utf-8")


def _download_subset(
    session: _Session, variant: str, split: str | None, ids: list[int] | None
) -> DownloadReport:
    root = session.root
    if variant not in ("full", "chunked", "csv"):
        raise DownloadError(
            f"--split/--ids fetch images of the 20k release out of {FULL_ZIP}; "
            f"the {variant} release cannot be fetched in part"
        )
    remote = RemoteZip(session.client, session.url(FULL_ZIP), FULL_ZIP)
    full_csv = root / STATE_DIR / "data.csv"
    _place(remote.read(CSV_IN_FULL_ZIP), full_csv)
    frame = read_data_csv(full_csv)
    rows = _select_rows(frame, split, ids)
    nights = root / "nights"
    wanted = sorted(
        {path for column in ("ref_path", "left_path", "right_path") for path in rows[column]}
    )
    missing = [
        p
        for p in wanted
        if not (nights / p).is_file()
        or (nights / p).stat().st_size != remote.getinfo(f"nights/{p}").file_size
    ]
    report = DownloadReport(f"{variant} ({split or ''}{' ids' if ids is not None else ''})", root)
    member_bytes = sum(remote.getinfo(f"nights/{p}").compress_size for p in missing)
    needed = sum(remote.getinfo(f"nights/{p}").file_size for p in missing)
    report.planned.append(
        (
            f"{len(rows)} triplets, {len(missing)} of {len(wanted)} images "
            f"missing, out of a {_human(remote.size)} archive",
            member_bytes,
            "fetch" if missing else "done",
        )
    )
    report.bytes_to_fetch = member_bytes
    if session.dry_run:
        return report
    _check_space(root, needed)
    records = {}
    with (
        _disk_full_reported(root, needed),
        session.bytes_bar(member_bytes, f"nights {split or 'ids'}") as bar,
    ):
        members = [f"nights/{p}" for p in missing]
        for info, data in remote.iter_members(members, jobs=session.jobs):
            records[info.filename] = _place(data, root / info.filename)
            bar.update(info.compress_size)
        records["nights/data.csv"] = _place(
            _subset_csv(full_csv, frame, nights), nights / "data.csv"
        )
    name = hashlib.sha256(json.dumps([split, sorted(ids or [])]).encode()).hexdigest()[:12]
    _write_record(root, f"subset-{name}", remote.url, records, split=split)
    report.files_produced = len(records)
    return report
