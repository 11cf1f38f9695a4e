"""Every published NIGHTS release: its files relative to a base URL and where they go.

The base URL defaults to upstream's host and can be changed per call or with
``NIGHTS_BASE_URL`` (mirrors exist, hosts move). Sizes are those reported by upstream; the
download engine asks the server for the exact ones.

Example::

    >>> from nights.releases import RELEASES, base_url
    >>> [f.path for f in RELEASES["jnd"].files]
    ['jnd_votes.csv']
    >>> len(RELEASES["chunked"].files)
    200
"""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_BASE_URL = "https://data.csail.mit.edu/nights/"
FULL_ZIP = "nights.zip"
CSV_IN_FULL_ZIP = "nights/data.csv"  # the only published copy of data.csv


@dataclass(frozen=True)
class ReleaseFile:
    """One file of a release.

    ``target`` is where it ends up under the download root: the destination file for a CSV,
    the folder a zip's members are extracted into for an archive.
    """

    path: str
    target: str
    approx_bytes: int | None = None

    @property
    def is_archive(self) -> bool:
        return self.path.endswith(".zip")

    @property
    def name(self) -> str:
        """A file-system-safe identifier, used for state and temporary files."""
        return self.path.replace("/", "__")


@dataclass(frozen=True)
class Release:
    name: str
    description: str
    files: tuple[ReleaseFile, ...]
    folder: str  # the folder under the download root that load_nights reads
    approx_unpacked_bytes: int | None = None


def _chunked_files() -> tuple[ReleaseFile, ...]:
    return tuple(
        ReleaseFile(f"nights_chunked/{kind}/{number:03d}.zip", f"nights/{kind}")
        for kind in ("ref", "distort")
        for number in range(100)
    )


def _unfiltered_files() -> tuple[ReleaseFile, ...]:
    archives = tuple(
        ReleaseFile(f"nights_unfiltered/{kind}_{span}.zip", f"nights_unfiltered/{kind}")
        for kind in ("ref", "distort")
        for span in ("0_24", "25_49", "50_74", "75_99")
    )
    csv = ReleaseFile(
        "nights_unfiltered/nights_raw.csv", "nights_unfiltered/nights_raw.csv", 16_000_000
    )
    return (csv, *archives)


RELEASES: dict[str, Release] = {
    "full": Release(
        "full",
        "the 20k triplets with data.csv, as one zip (58 GB unzipped)",
        (ReleaseFile(FULL_ZIP, ""),),
        "nights",
        58_000_000_000,
    ),
    "chunked": Release(
        "chunked",
        "the same images as 200 zips of one folder each; data.csv is read out of "
        "nights.zip with Range requests (the chunked release lacks it)",
        _chunked_files(),
        "nights",
        58_000_000_000,
    ),
    "unfiltered": Release(
        "unfiltered",
        "the ~100k generated triplets with all votes (289 GB unzipped)",
        _unfiltered_files(),
        "nights_unfiltered",
        289_000_000_000,
    ),
    "jnd": Release(
        "jnd",
        "just-noticeable-difference votes",
        (ReleaseFile("jnd_votes.csv", "jnd_votes.csv", 201_000),),
        "",
        201_000,
    ),
    "csv": Release(
        "csv",
        "data.csv alone, read out of nights.zip without downloading the archive",
        (),
        "nights",
        1_900_000,
    ),
}


def base_url(url: str | None = None) -> str:
    """The base URL: the argument, else ``$NIGHTS_BASE_URL``, else upstream's host."""
    chosen = url or os.environ.get("NIGHTS_BASE_URL") or DEFAULT_BASE_URL
    return chosen if chosen.endswith("/") else chosen + "/"


def file_url(release_file_path: str, url: str | None = None) -> str:
    return base_url(url) + release_file_path
