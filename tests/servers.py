"""Servers and processes the tests start: a local release server with fault injection and the
release archives it serves, a MongoDB for FiftyOne, free ports.

Used by the test suite and the benchmarks (never installed with the package); everything binds
127.0.0.1 only. The archives
follow the published layout: ``nights.zip`` (members under ``nights/``, zip64 structures
forced on request), ``nights_chunked/{ref,distort}/NNN.zip`` (members ``NNN/...``),
``nights_unfiltered/{ref,distort}_{0_24,...}.zip`` plus ``nights_raw.csv``, ``jnd_votes.csv``.

Example::

    >>> from tests.servers import Fault, ReleaseServer, make_release_archives
    >>> mirror = make_release_archives(sample_home, "/tmp/mirror")          # doctest: +SKIP
    >>> with ReleaseServer(mirror) as server:                                # doctest: +SKIP
    ...     server.faults.append(Fault(kind="status", status=503, times=2))
    ...     download("chunked", root, base_url=server.url)
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import re
import shutil
import threading
import time
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from nights.releases import RELEASES

# -- archives --


@contextlib.contextmanager
def _zip64_everywhere():
    """Makes zipfile write zip64 records (end of central directory included) for any size."""
    saved = zipfile.ZIP64_LIMIT, zipfile.ZIP_FILECOUNT_LIMIT
    zipfile.ZIP64_LIMIT, zipfile.ZIP_FILECOUNT_LIMIT = 1, 1
    try:
        yield
    finally:
        zipfile.ZIP64_LIMIT, zipfile.ZIP_FILECOUNT_LIMIT = saved


def _write_zip(path: Path, members: list[tuple[str, Path]], zip64: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        if zip64:
            stack.enter_context(_zip64_everywhere())
        archive = stack.enter_context(zipfile.ZipFile(path, "w", zipfile.ZIP_STORED))
        for name, source in members:
            archive.write(source, name)


def make_release_archives(
    home: str | os.PathLike, out: str | os.PathLike, zip64: bool = True
) -> Path:
    """Packs a synthetic NIGHTS home (see :mod:`nights.synthetic`) as the releases are served."""
    home, out = Path(home), Path(out)
    nights = home / "nights"
    files = sorted(p for p in nights.rglob("*") if p.is_file())
    _write_zip(
        out / "nights.zip",
        [(f"nights/{p.relative_to(nights).as_posix()}", p) for p in files],
        zip64,
    )
    for kind in ("ref", "distort"):
        for number in range(100):
            folder = nights / kind / f"{number:03d}"
            members = sorted(folder.glob("*")) if folder.is_dir() else []
            _write_zip(
                out / "nights_chunked" / kind / f"{number:03d}.zip",
                [(f"{number:03d}/{p.name}", p) for p in members],
            )
    unfiltered = home / "nights_unfiltered"
    for release_file in RELEASES["unfiltered"].files if unfiltered.is_dir() else ():
        target = out / release_file.path
        if not release_file.is_archive:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(unfiltered / "nights_raw.csv", target)
            continue
        kind, first, last = re.match(r".*/(\w+)_(\d+)_(\d+)\.zip", release_file.path).groups()
        members = [
            (f"{folder.name}/{p.name}", p)
            for folder in sorted((unfiltered / kind).glob("*"))
            if int(first) <= int(folder.name) <= int(last)
            for p in sorted(folder.glob("*"))
        ]
        _write_zip(target, members)
    shutil.copyfile(home / "jnd_votes.csv", out / "jnd_votes.csv")
    return out


# -- server --


@dataclass
class Fault:
    """One injected failure, applied to the first ``times`` matching requests.

    kinds: ``status`` (answer ``status``), ``drop`` (close after ``after`` bytes of body),
    ``stall`` (sleep ``seconds`` before the body), ``short`` (announce more bytes than sent),
    ``corrupt`` (flip the byte at file offset ``offset`` in every answer; ``times`` ignored).
    """

    kind: str
    path: str = "*"
    times: int = 1
    status: int = 503
    after: int = 0
    seconds: float = 0.0
    offset: int = 0
    hits: int = 0


@dataclass
class RequestRecord:
    method: str
    path: str
    range: str | None
    status: int
    body_bytes: int


@dataclass
class ServerConfig:
    honour_ranges: bool = True
    rate_limit: float | None = None  # bytes per second per connection
    redirect_to: str | None = None  # base URL of a mirror: every request is redirected there
    faults: list[Fault] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def do_GET(self) -> None:
        self._answer(head=False)

    def _fault(self, kind: str, body: int | None = None) -> Fault | None:
        """The first matching fault with tries left. Body faults spare the client's one-byte
        size probe (``Range: bytes=0-0``), and a ``drop`` only matches a body longer than its
        ``after``, so that each fault hits a real transfer."""
        if kind in ("drop", "short", "stall") and self.headers.get("Range") == "bytes=0-0":
            return None
        with self.server.lock:
            for fault in self.server.config.faults:
                if kind == "drop" and body is not None and body <= fault.after:
                    continue
                if fault.kind == kind and fnmatch.fnmatch(self.path.lstrip("/"), fault.path):
                    if kind == "corrupt":
                        return fault
                    if fault.hits < fault.times:
                        fault.hits += 1
                        return fault
        return None

    def _record(self, status: int, body: int) -> None:
        with self.server.lock:
            self.server.log.append(
                RequestRecord(self.command, self.path, self.headers.get("Range"), status, body)
            )

    def _answer(self, head: bool) -> None:
        config = self.server.config
        if config.redirect_to:
            self.send_response(302)
            self.send_header("Location", config.redirect_to.rstrip("/") + self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()
            self._record(302, 0)
            return
        fault = self._fault("status")
        if fault:
            self.send_error(fault.status)
            self._record(fault.status, 0)
            return
        path = (self.server.root / self.path.lstrip("/").split("?")[0]).resolve()
        if self.server.root not in path.parents or not path.is_file():
            self.send_error(404)
            self._record(404, 0)
            return
        size = path.stat().st_size
        start, end, status = 0, size, 200
        wanted = self.headers.get("Range")
        if wanted and config.honour_ranges:
            match = re.fullmatch(r"bytes=(\d*)-(\d*)", wanted.strip())
            if not match or match.groups() == ("", ""):
                self.send_error(416)
                self._record(416, 0)
                return
            first, last = match.groups()
            if first:
                start, end = int(first), min(size, int(last) + 1) if last else size
            else:
                start, end = max(0, size - int(last)), size
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.end_headers()
                self._record(416, 0)
                return
            status = 206
        short = self._fault("short")
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        if config.honour_ranges:
            self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.send_header("Content-Length", str(end - start + (short.after if short else 0)))
        self.end_headers()
        if head:
            self._record(status, 0)
            return
        stall = self._fault("stall")
        if stall:
            time.sleep(stall.seconds)
        drop = self._fault("drop", end - start)
        corrupt = self._fault("corrupt")
        sent = 0
        with open(path, "rb") as handle:
            handle.seek(start)
            started = time.monotonic()
            while sent < end - start:
                chunk = handle.read(min(1 << 16, end - start - sent))
                if corrupt and start + sent <= corrupt.offset < start + sent + len(chunk):
                    index = corrupt.offset - start - sent
                    chunk = chunk[:index] + bytes([chunk[index] ^ 0xFF]) + chunk[index + 1 :]
                if drop and sent + len(chunk) > drop.after:
                    chunk = chunk[: max(0, drop.after - sent)]
                try:
                    self.wfile.write(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    break
                sent += len(chunk)
                if drop and sent >= drop.after:
                    break
                if config.rate_limit:
                    ahead = sent / config.rate_limit - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
        self._record(status, sent)
        self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, root: Path, config: ServerConfig):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root.resolve()
        self.config = config
        self.lock = threading.Lock()
        self.log: list[RequestRecord] = []


class ReleaseServer:
    """Serves a folder on 127.0.0.1 with Range support, rate limits and injected faults."""

    def __init__(self, root: str | os.PathLike, **config):
        self._server = _Server(Path(root), ServerConfig(**config))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/"

    @property
    def config(self) -> ServerConfig:
        return self._server.config

    @property
    def faults(self) -> list[Fault]:
        return self._server.config.faults

    @property
    def log(self) -> list[RequestRecord]:
        return self._server.log

    def body_bytes(self) -> int:
        """Bytes of body sent so far."""
        return sum(record.body_bytes for record in self.log)

    def start(self) -> ReleaseServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> ReleaseServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# -- a MongoDB for FiftyOne --


def fiftyone_mongod() -> Path:
    """Where FiftyOne's set-up put its mongod (it may be absent)."""
    import importlib.util

    spec = importlib.util.find_spec("fiftyone")
    if spec is None:
        raise FileNotFoundError("fiftyone is not installed")
    return Path(spec.submodule_search_locations[0]) / "db" / "bin" / "mongod"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, process, what: str, timeout: float = 30.0) -> None:
    """Returns once ``process`` accepts connections on 127.0.0.1:``port``; raises (and kills
    it) if it exits or the time runs out first."""
    import socket

    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"{what} did not start (exit {process.poll()})") from None
            time.sleep(0.2)


@contextlib.contextmanager
def mongo_server(binary: str | os.PathLike | None = None, timeout: float = 30.0):
    """A mongod on 127.0.0.1 with a temporary dbpath; yields its URI, stops it at the end."""
    import subprocess
    import tempfile

    binary = Path(binary) if binary else fiftyone_mongod()
    dbpath = Path(tempfile.mkdtemp(prefix="nights-mongo-"))
    port = free_port()
    process = subprocess.Popen(
        [
            str(binary),
            "--dbpath",
            str(dbpath),
            "--bind_ip",
            "127.0.0.1",
            "--port",
            str(port),
            "--quiet",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process, str(binary), timeout)
        yield f"mongodb://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(30)
        shutil.rmtree(dbpath, ignore_errors=True)
