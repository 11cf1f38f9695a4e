"""Every reader of outside input on the data side, fed generated and mangled input.

For any input the result is a value or the package's own error (a ``NightsError``), never
another exception: CSV files, local archives, remote central directories, image files.
"""

from __future__ import annotations

import csv
import io
import itertools
import tempfile
import warnings
import zipfile
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

import nights.download
from nights import NightsError
from nights.images import ImageStatus, inspect_image, open_rgb
from nights.remote_zip import RemoteZip
from nights.schema import (
    DATA_CSV_COLUMNS,
    JND_ALIASES,
    RAW_ALIASES,
    read_data_csv,
    read_jnd_csv,
    read_raw_csv,
)
from nights.transfer import HttpClient, RetryPolicy

from .servers import ReleaseServer

READERS = (read_data_csv, read_raw_csv, read_jnd_csv)
FAST = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
KNOWN_NAMES = sorted(
    set(DATA_CSV_COLUMNS)
    | {name for names in (*RAW_ALIASES.values(), *JND_ALIASES.values()) for name in names}
)
CELL_TEXT = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        ["1", "1.0", "0", "0.5", "-1", "nan", "inf", "1e400", "True", "no", "", " ", "same"]
    ),
    st.sampled_from(["ref/000/001.png", "../x.png", "/abs.png", "C:\\x.png", "a\x00b", '"']),
    st.sampled_from(["train", "val", "test", "different", "\u00e9\u4e2d", "\ufeff"]),
)


def _read_each(path: Path) -> None:
    """Every reader gives a DataFrame or a NightsError whose message names the file."""
    for reader in READERS:
        try:
            frame = reader(path)
        except NightsError as error:
            assert str(path) in str(error)
        else:
            assert len(frame.columns) > 0


@pytest.fixture(scope="module")
def scratch():
    with tempfile.TemporaryDirectory(prefix="s-nights-hostile-") as folder:
        yield Path(folder)


@FAST
@given(data=st.binary(max_size=3000))
@example(data=b"")
@example(data=b"\xff\xfe\x00")
@example(data=b"id,left_vote\n1")
def test_csv_readers_on_arbitrary_bytes(scratch, data):
    path = scratch / "bytes.csv"
    path.write_bytes(data)
    _read_each(path)


@FAST
@given(
    header=st.lists(
        st.one_of(st.sampled_from(KNOWN_NAMES), st.text(max_size=8)), min_size=1, max_size=14
    ),
    rows=st.lists(st.lists(CELL_TEXT, min_size=0, max_size=15), max_size=6),
    bom=st.booleans(),
)
@example(header=["answer", "distort", "ref"], rows=[], bom=False)  # no rows: nothing to average
@example(header=["answer"] * 3 + ["caption"], rows=[[""] * 4], bom=False)  # a name repeated
@example(header=["ref", "left", "right", "p", "id"], rows=[["", "", "", "", ""]], bom=True)
def test_csv_readers_on_any_header_and_any_cells(scratch, header, rows, bom):
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    path = scratch / "cells.csv"
    path.write_text(("\ufeff" if bom else "") + buffer.getvalue(), encoding="utf-8")
    _read_each(path)


@FAST
@given(
    order=st.permutations(DATA_CSV_COLUMNS),
    rows=st.lists(st.lists(CELL_TEXT, min_size=10, max_size=10), min_size=1, max_size=5),
)
@example(order=list(DATA_CSV_COLUMNS), rows=[[""] * 10])  # empty id: was a raw TypeError
def test_data_csv_in_any_column_order_with_any_cells(scratch, order, rows):
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(order)
    writer.writerows(rows)
    path = scratch / "data.csv"
    path.write_text(buffer.getvalue(), encoding="utf-8")
    _read_each(path)


# -- archives --

MEMBER_NAMES = st.one_of(
    st.text(min_size=1, max_size=20),
    st.sampled_from(
        [
            "000/001.png",
            "000/001.png/x.png",
            "000",
            "000/",
            "ref/000/002.png",
            "../escape.png",
            "/abs.png",
            "a/../../b.png",
            "x" * 300,
            "a\\..\\b.png",
            ".",
            "./000/003.png",
        ]
    ),
)


def _archive(members: list[tuple[str, bytes]], method: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are part of the test
        for name, data in members:
            archive.writestr(name.split("\0")[0] or "x", data)  # zipfile ends names at NUL
    return buffer.getvalue()


def _mangle(data: bytes, flips: list[tuple[int, int]], cut: int | None) -> bytes:
    mangled = bytearray(data)
    for position, value in flips:
        if mangled:
            mangled[position % len(mangled)] = value
    return bytes(mangled[:cut] if cut is not None else mangled)


def _lying_about_size() -> bytes:
    """A stored member of 3 bytes, with its CRC, that both headers say holds 4."""
    data = bytearray(_archive([("000/001.png", b"abc")], zipfile.ZIP_STORED))
    local, central = data.index(b"PK\x03\x04"), data.index(b"PK\x01\x02")
    data[local + 22 : local + 26] = (4).to_bytes(4, "little")
    data[central + 24 : central + 28] = (4).to_bytes(4, "little")
    return bytes(data)


ARCHIVES = st.builds(
    _mangle,
    st.builds(
        _archive,
        st.lists(st.tuples(MEMBER_NAMES, st.binary(max_size=300)), max_size=5),
        st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2]),
    ),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
    st.one_of(st.none(), st.integers(0, 2000)),
)


@FAST
@given(data=ARCHIVES)
@example(data=b"")
@example(data=b"PK\x05\x06" + bytes(18))
@example(data=_lying_about_size())
def test_local_extraction_of_any_archive(scratch, data):
    """Extraction gives the records or a NightsError; nothing lands outside the folder."""
    for folder in ("", "nights/ref"):
        with tempfile.TemporaryDirectory(dir=scratch) as outer:
            root = Path(outer) / "root"
            (root / nights.download.STATE_DIR).mkdir(parents=True)
            archive = Path(outer) / "chunk.zip"
            archive.write_bytes(data)
            try:
                records = nights.download._extract(archive, folder, root, "chunk.zip", "http://x/")
            except NightsError as error:
                assert "chunk.zip" in str(error) and "http://x/" in str(error)
            else:
                for relative, record in records.items():
                    assert (root / relative).resolve().is_relative_to(root.resolve())
                    assert (root / relative).stat().st_size == record["size"]
            outside = [p for p in Path(outer).iterdir() if p.name not in ("root", "chunk.zip")]
            assert outside == []


@pytest.fixture(scope="module")
def remote(scratch):
    folder = scratch / "served"
    folder.mkdir()
    with ReleaseServer(folder) as server:
        yield server, folder


_CLIENT = HttpClient(
    connections=2,
    timeout=(2.0, 5.0),
    retry=RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.02),
)
_NAMES = itertools.count()


@FAST
@given(data=ARCHIVES)
@example(data=b"")
@example(data=_lying_about_size())
def test_remote_central_directory_of_any_archive(remote, data):
    """The Range reader of a served archive: members or a NightsError naming the URL."""
    server, folder = remote
    name = f"archive-{next(_NAMES)}.zip"
    (folder / name).write_bytes(data)
    url = server.url + name
    try:
        archive = RemoteZip(_CLIENT, url)
        for member, content in archive.iter_members(archive.names()[:5], jobs=2):
            assert len(content) == member.file_size
            assert zlib.crc32(content) == member.CRC
    except NightsError as error:
        assert url in str(error)


# -- images --


def _png(mode: str, side: int) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (side, side), 200).save(buffer, format="PNG")
    return buffer.getvalue()


PNGS = st.builds(
    _mangle,
    st.builds(_png, st.sampled_from(["RGB", "L", "RGBA", "I;16", "P", "1"]), st.integers(1, 40)),
    st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 255)), max_size=4),
    st.one_of(st.none(), st.integers(0, 3000)),
)


@FAST
@given(data=PNGS)
@example(data=b"\x89PNG\r\n\x1a\n")
def test_image_checks_on_mangled_pngs(scratch, data):
    path = scratch / "image.png"
    path.write_bytes(data)
    for decode in (False, True):
        status = inspect_image(path, decode)
        assert isinstance(status, ImageStatus)
        assert (status.problem is None) == (status.description is not None)
    for source in (path, data):
        try:
            image = open_rgb(source)
        except NightsError as error:
            assert str(error).startswith(str(path) if source == path else "image bytes")
        else:
            assert image.mode == "RGB"
