"""Reading members of a remote zip with HTTP Range requests, without the whole archive.

A zip's central directory sits at its end: two or three small ranged reads give the list of
members (zip64 included, handled by :mod:`zipfile`), and each member is then one range.
Members wanted together are grouped so that nearby ones travel in one request: ranges closer
than ``gap`` bytes (a quarter of a typical member, at most 64 KiB: no unwanted image is
carried) are merged, up to ``max_span`` bytes a request, and the groups are fetched in
parallel. Each member's CRC-32 is checked as it is decompressed.

Example::

    >>> from nights.remote_zip import RemoteZip
    >>> from nights.transfer import HttpClient
    >>> archive = RemoteZip(HttpClient(), mirror_url + "nights.zip")
    >>> archive.read("nights/data.csv")[:9]
    b'id,left_v'
"""

from __future__ import annotations

import errno
import io
import zipfile
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .errors import DownloadError, IntegrityError, NightsError
from .transfer import HttpClient, RangeIgnored, RemoteInfo

_TAIL = 1 << 16  # the end of central directory record plus a comment fits in 64 KiB
_LOCAL_HEADER_SLACK = 1024  # local headers repeat the name and may carry other extra fields


class _RangeReader(io.RawIOBase):
    """A seekable read-only file over a remote URL, answering reads from cached spans."""

    def __init__(self, client: HttpClient, url: str, size: int, what: str):
        self.client, self.url, self.size, self.what = client, url, size, what
        self.position = 0
        self.spans: dict[int, bytes] = {}

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        if base + offset < 0:  # as a real file answers (zipfile relies on it for short files)
            raise OSError(errno.EINVAL, "negative seek position")
        self.position = base + offset
        return self.position

    def add_span(self, start: int, data: bytes) -> None:
        self.spans[start] = data

    def drop_spans(self) -> None:
        self.spans.clear()

    def readinto(self, buffer) -> int:
        wanted = min(len(buffer), self.size - self.position)
        if wanted <= 0:
            return 0
        data = self._cached(self.position, wanted)
        if data is None:
            data = self.client.read_range(
                self.url, self.position, self.position + wanted, self.what
            )
        buffer[:wanted] = data
        self.position += wanted
        return wanted

    def _cached(self, start: int, length: int) -> bytes | None:
        for span_start, data in self.spans.items():
            if span_start <= start and start + length <= span_start + len(data):
                return data[start - span_start : start - span_start + length]
        return None


@dataclass(frozen=True)
class _Group:
    start: int
    end: int
    members: tuple[zipfile.ZipInfo, ...]


def group_members(members: Iterable[zipfile.ZipInfo], gap: int, max_span: int) -> list[_Group]:
    """Merges the byte ranges of members that lie within ``gap`` bytes of each other."""
    groups: list[_Group] = []
    for info in sorted(members, key=lambda i: i.header_offset):
        start = info.header_offset
        end = start + 30 + len(info.filename.encode()) + len(info.extra) + info.compress_size
        end += _LOCAL_HEADER_SLACK
        last = groups[-1] if groups else None
        if last and start - last.end <= gap and max(end, last.end) - last.start <= max_span:
            groups[-1] = _Group(last.start, max(end, last.end), (*last.members, info))
        else:
            groups.append(_Group(start, end, (info,)))
    return groups


class RemoteZip:
    """The members of a zip on an HTTP server that honours Range requests."""

    def __init__(
        self, client: HttpClient, url: str, what: str | None = None, info: RemoteInfo | None = None
    ):
        self.client, self.url = client, url
        self.what = what or url.rsplit("/", 1)[-1]
        info = info or client.info(url, self.what)
        if not info.accepts_ranges or info.size is None:
            raise DownloadError(
                f"{self.what}: the server does not honour Range requests, so members cannot "
                f"be read without downloading the whole archive; URL {url}"
            )
        self.size = info.size
        self._reader = _RangeReader(client, info.url, info.size, self.what)
        tail_start = max(0, self.size - _TAIL)
        try:
            self._reader.add_span(
                tail_start, client.read_range(info.url, tail_start, self.size, self.what)
            )
            self.zip = zipfile.ZipFile(self._reader)
        except RangeIgnored as error:
            raise DownloadError(f"{self.what}: {error}; URL {url}") from None
        except NightsError:
            raise
        # zipfile meets a mangled directory with many types (BadZipFile, ValueError, EOFError,
        # struct.error ...): all mean the archive cannot be read.
        except Exception as error:
            raise IntegrityError(f"{self.what}: not a readable zip ({error}); URL {url}") from None
        self._reader.drop_spans()

    def unpacked_bytes(self) -> int:
        """What the members take once extracted, as the central directory declares."""
        return sum(info.file_size for info in self.zip.infolist())

    def names(self) -> list[str]:
        return self.zip.namelist()

    def getinfo(self, name: str) -> zipfile.ZipInfo:
        try:
            return self.zip.getinfo(name)
        except KeyError:
            raise DownloadError(f"{self.what} has no member {name!r}; URL {self.url}") from None

    def read(self, name: str) -> bytes:
        """One member's bytes, CRC-checked."""
        return next(iter(self.iter_members([name])))[1]

    def iter_members(
        self,
        names: Iterable[str],
        *,
        jobs: int = 4,
        gap: int | None = None,
        max_span: int = 32 << 20,
    ) -> Iterator[tuple[zipfile.ZipInfo, bytes]]:
        """Yields ``(info, data)`` for each name, fetching coalesced ranges in parallel.

        ``gap`` defaults to a quarter of the median member size, at most 64 KiB: a merged
        request never carries a whole unwanted member. Memory holds at most ``jobs`` groups of
        at most ``max_span`` bytes (plus a member larger than that, alone in its group).
        """
        infos = [self.getinfo(name) for name in names]
        if gap is None:
            sizes = sorted(info.compress_size for info in infos) or [0]
            gap = min(64 << 10, sizes[len(sizes) // 2] // 4)
        groups = group_members(infos, gap, max_span)

        def fetch(group: _Group) -> tuple[_Group, bytes]:
            end = min(group.end, self.size)
            return group, self.client.read_range(self._reader.url, group.start, end, self.what)

        with ThreadPoolExecutor(max(1, jobs)) as pool:
            window: list = []
            pending = iter(groups)
            for group in pending:
                window.append(pool.submit(fetch, group))
                if len(window) >= jobs:
                    break
            while window:
                group, data = window.pop(0).result()
                following = next(pending, None)
                if following is not None:
                    window.append(pool.submit(fetch, following))
                yield from self._extract(group, data)

    def _extract(self, group: _Group, data: bytes) -> Iterator[tuple[zipfile.ZipInfo, bytes]]:
        """Members of a fetched group, read by zipfile from the span (no further request)."""
        self._reader.add_span(group.start, data)
        try:
            for info in group.members:
                try:
                    with self.zip.open(info) as member:
                        content = member.read()
                    if len(content) != info.file_size:  # zipfile checks the CRC, not the length
                        raise zipfile.BadZipFile(
                            f"{len(content)} bytes where the directory declares {info.file_size}"
                        )
                except NightsError:
                    raise
                except Exception as error:  # as in __init__: the member cannot be read
                    raise IntegrityError(
                        f"{self.what}: member {info.filename} is corrupt ({error}); URL {self.url}"
                    ) from None
                yield info, content
        finally:
            self._reader.drop_spans()
