"""HTTP transfers that survive real networks: retries, resume, parallel byte ranges.

* Retries with exponential backoff and jitter on timeouts, resets, truncated bodies, 429 and
  5xx; a 404 (or other 4xx) fails at once with the file and URL in the message.
* Resume: a ``.part`` file and a ``.part.json`` record of the finished bytes of each segment;
  the same call after an interruption (Ctrl-C, kill -9) continues where the data stopped.
* Byte ranges: a large file is fetched as several segments in parallel when the server honours
  ``Range``; a server that ignores it (answers 200 to a ranged request) is detected, logged,
  and the file is fetched as one stream instead.
* Verification: every 206 answer's ``Content-Range`` total and the final size are checked
  against the size announced; a ``.part`` file becomes the real name only when complete.
* Memory is flat: data goes to disk chunk by chunk.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import requests
import urllib3

from ._files import write_atomic
from .errors import DownloadError

logger = logging.getLogger(__name__)

RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
_CHUNK = 1 << 16
_STATE_EVERY_S = 1.0


@dataclass
class RetryPolicy:
    """Exponential backoff with full jitter: ``uniform(0, min(max_delay, base * 2**n))``."""

    attempts: int = 8
    base_delay: float = 0.5
    max_delay: float = 30.0

    def wait(self, attempt: int) -> None:
        time.sleep(random.uniform(0, min(self.max_delay, self.base_delay * 2**attempt)))


class _Retryable(Exception):
    """A failure worth another try (the message says what happened)."""


class RangeIgnored(Exception):
    """The server answered a ranged request with the whole file."""


@dataclass
class RemoteInfo:
    url: str  # after redirects
    size: int | None
    accepts_ranges: bool


@dataclass
class HttpClient:
    """A requests session per thread, a cap on simultaneous connections, a retry policy."""

    connections: int = 8
    timeout: tuple[float, float] = (10.0, 60.0)
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self):
        self._local = threading.local()
        self._slots = threading.BoundedSemaphore(self.connections)
        self.bytes_received = 0
        self._count_lock = threading.Lock()

    @property
    def session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            session = requests.Session()
            session.headers["User-Agent"] = "nights-downloader"
            session.headers["Accept-Encoding"] = "identity"  # byte offsets must be the file's
            self._local.session = session
        return self._local.session

    def count(self, size: int) -> None:
        with self._count_lock:
            self.bytes_received += size

    def call(self, what: str, url: str, action: Callable[[], object]):
        """Runs ``action`` with retries; ``what`` names the file in errors."""
        last = None
        for attempt in range(self.retry.attempts):
            try:
                with self._slots:
                    return action()
            except (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
                _Retryable,
            ) as error:
                last = error
                logger.info("%s: %s (try %d of %d)", what, error, attempt + 1, self.retry.attempts)
                if attempt + 1 < self.retry.attempts:
                    self.retry.wait(attempt)
        raise DownloadError(
            f"{what}: giving up after {self.retry.attempts} tries ({last}); "
            f"URL {url}. Run the same command again to resume."
        )

    def check_status(self, response: requests.Response, what: str) -> None:
        if response.status_code in RETRY_STATUS:
            raise _Retryable(f"HTTP {response.status_code}")
        if response.status_code >= 400:
            raise DownloadError(
                f"{what}: HTTP {response.status_code} from {response.url}"
                + (
                    " (not found: check --base-url and the file name)"
                    if response.status_code == 404
                    else ""
                )
            )

    def info(self, url: str, what: str) -> RemoteInfo:
        """Size and Range support, from a one-byte ranged GET (more reliable than HEAD)."""

        def probe():
            with self.session.get(
                url, headers={"Range": "bytes=0-0"}, stream=True, timeout=self.timeout
            ) as response:
                self.check_status(response, what)
                if response.status_code == 206:
                    total = _content_range_total(response)
                    return RemoteInfo(response.url, total, True)
                length = response.headers.get("Content-Length")
                return RemoteInfo(response.url, int(length) if length else None, False)

        return self.call(what, url, probe)

    def read_range(self, url: str, start: int, end: int, what: str) -> bytes:
        """Bytes ``start .. end-1`` (small reads: central directories, zip members)."""

        def fetch():
            headers = {"Range": f"bytes={start}-{end - 1}"}
            with self.session.get(
                url, headers=headers, stream=True, timeout=self.timeout
            ) as response:
                self.check_status(response, what)
                if response.status_code != 206:
                    raise RangeIgnored(f"{response.url} ignores Range requests")
                data = response.content
                self.count(len(data))
                if len(data) != end - start:
                    raise _Retryable(f"short read: {len(data)} of {end - start} bytes")
                return data

        return self.call(what, url, fetch)


def _stream(response: requests.Response) -> Iterator[bytes]:
    """The body as it arrives: ``read1`` hands over partial data before a connection drops,
    where ``iter_content`` would lose its half-filled chunk, so a resume starts after it."""
    raw = response.raw
    while True:
        try:
            chunk = raw.read1(_CHUNK)
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise _Retryable(f"connection broken ({error})") from None
        if not chunk:
            return
        yield chunk


def _content_range_total(response: requests.Response) -> int | None:
    match = re.match(r"bytes \d+-\d+/(\d+)", response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    """``os.pwrite`` until every byte is written: on a nearly full disk a write can be short
    (the next one then fails with ENOSPC), and the bytes it left out must not count as done."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


@dataclass
class _Segment:
    start: int
    end: int  # exclusive
    done: int = 0

    @property
    def remaining(self) -> int:
        return self.end - self.start - self.done


class FileDownload:
    """Fetches one URL into ``dest``; resumable; parallel segments when the server allows."""

    def __init__(
        self,
        client: HttpClient,
        url: str,
        dest: Path,
        what: str,
        segments: int = 1,
        min_segment_bytes: int = 8 << 20,
        on_bytes: Callable[[int], None] = lambda n: None,
    ):
        self.client, self.url, self.dest, self.what = client, url, Path(dest), what
        self.wanted_segments, self.min_segment_bytes = segments, min_segment_bytes
        self.on_bytes = on_bytes
        self.part = self.dest.with_name(self.dest.name + ".part")
        self.state_path = self.dest.with_name(self.dest.name + ".part.json")
        self._lock = threading.Lock()
        self._saved_at = 0.0

    # -- state on disk --
    def _load_state(self, info: RemoteInfo) -> list[_Segment] | None:
        if not (self.part.exists() and self.state_path.exists()):
            return None
        try:
            state = json.loads(self.state_path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        if state.get("size") != info.size or state.get("ranges") != info.accepts_ranges:
            logger.warning("%s changed on the server since the last try; starting again", self.what)
            return None
        return [_Segment(*values) for values in state["segments"]]

    def _save_state(
        self, segments: list[_Segment], size: int | None, ranges: bool, force: bool = False
    ) -> None:
        now = time.monotonic()
        with self._lock:
            if not force and now - self._saved_at < _STATE_EVERY_S:
                return
            self._saved_at = now
            payload = {
                "url": self.url,
                "size": size,
                "ranges": ranges,
                "segments": [[s.start, s.end, s.done] for s in segments],
            }
            write_atomic(self.state_path, json.dumps(payload))

    def remaining_bytes(self, info: RemoteInfo) -> int | None:
        """Bytes still to fetch, counting what an earlier try finished."""
        if self.dest.exists():
            return 0
        segments = self._load_state(info)
        if segments is None:
            return info.size
        return sum(s.remaining for s in segments)

    # -- transfer --
    def run(self, info: RemoteInfo | None = None) -> Path:
        if self.dest.exists():
            return self.dest
        info = info or self.client.info(self.url, self.what)
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._fetch(info, ranges=info.accepts_ranges and info.size is not None)
        except RangeIgnored:
            logger.warning(
                "%s: the server ignores Range requests; fetching the whole file "
                "in one stream (no resume, no parallel parts)",
                self.what,
            )
            self._fetch(RemoteInfo(info.url, info.size, False), ranges=False)
        size = self.part.stat().st_size
        if info.size is not None and size != info.size:
            raise DownloadError(
                f"{self.what}: got {size} bytes, the server announced "
                f"{info.size}; URL {self.url}. Run again to retry."
            )
        os.replace(self.part, self.dest)
        self.state_path.unlink(missing_ok=True)
        return self.dest

    def _fetch(self, info: RemoteInfo, ranges: bool) -> None:
        segments = self._load_state(info) if ranges else None
        if segments is None:
            if ranges:
                count = max(
                    1, min(self.wanted_segments, math.ceil(info.size / self.min_segment_bytes))
                )
                bounds = [info.size * i // count for i in range(count + 1)]
                segments = [_Segment(a, b) for a, b in itertools.pairwise(bounds)]
            else:
                segments = [_Segment(0, info.size if info.size is not None else -1)]
            with open(self.part, "wb") as handle:
                if info.size is not None:
                    handle.truncate(info.size)
            self._save_state(segments, info.size, ranges, force=True)
        else:
            done = sum(s.done for s in segments)
            logger.info("%s: resuming, %d bytes already there", self.what, done)
            self.on_bytes(done)
        fd = os.open(self.part, os.O_RDWR)
        try:
            pending = [s for s in segments if s.remaining != 0]
            if len(pending) > 1:
                with ThreadPoolExecutor(len(pending)) as pool:
                    for future in [
                        pool.submit(self._segment, fd, s, segments, info, ranges) for s in pending
                    ]:
                        future.result()
            elif pending:
                self._segment(fd, pending[0], segments, info, ranges)
        finally:
            os.close(fd)
            self._save_state(segments, info.size, ranges, force=True)

    def _segment(
        self, fd: int, segment: _Segment, segments, info: RemoteInfo, ranges: bool
    ) -> None:
        def attempt():
            if ranges and segment.remaining == 0:  # the body was complete before the error
                return
            headers = {}
            if ranges:
                headers["Range"] = f"bytes={segment.start + segment.done}-{segment.end - 1}"
            elif segment.done:  # a whole-file stream cannot resume: start again
                self.on_bytes(-segment.done)
                segment.done = 0
            with self.client.session.get(
                info.url, headers=headers, stream=True, timeout=self.client.timeout
            ) as response:
                self.client.check_status(response, self.what)
                if ranges and response.status_code != 206:
                    raise RangeIgnored()
                if ranges and _content_range_total(response) != info.size:
                    raise _Retryable("the file's size changed on the server")
                for chunk in _stream(response):
                    _pwrite_all(fd, chunk, segment.start + segment.done)
                    segment.done += len(chunk)
                    self.client.count(len(chunk))
                    self.on_bytes(len(chunk))
                    self._save_state(segments, info.size, ranges)
                    if segment.end >= 0 and segment.done > segment.end - segment.start:
                        raise DownloadError(
                            f"{self.what}: the server sent more bytes than "
                            f"announced; URL {info.url}"
                        )
                if segment.end < 0:
                    segment.end = segment.start + segment.done
                if segment.remaining > 0:
                    raise _Retryable(f"connection closed with {segment.remaining} bytes left")

        self.client.call(self.what, info.url, attempt)
