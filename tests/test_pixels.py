"""The table that decodes nothing: raw pixels, built on every core, read as views of the
memory map; the resize is exactly DreamSim's."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import nights.audit.scoring
import nights.images
import nights.table
import nights.torch_data
from nights import load_nights
from nights.cli import main
from nights.images import open_rgb, resize_like_dreamsim, resized_pixels
from nights.pixels import is_pixel_type, to_numpy

from .conftest import DEMO_IMAGES

torch = pytest.importorskip("torch")


def pil_reference(source, size: int) -> np.ndarray:
    """DreamSim's preprocessing as upstream writes it: RGB, then PIL's bicubic resize."""
    with Image.open(source) as image:
        return np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC))


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def odd_images():
    """Every mode a PNG can hold, at sides that are odd, prime, thin or already the target."""
    rng = np.random.default_rng(3)
    noise = rng.integers(0, 256, (53, 37, 4), dtype=np.uint8)
    rgba = Image.fromarray(noise, "RGBA")
    palette = Image.fromarray(noise[..., :3], "RGB").quantize(17)
    transparent = palette.copy()
    transparent.info["transparency"] = 3
    wide = Image.fromarray(rng.integers(0, 65535, (41, 29), dtype=np.uint16))
    return {
        "rgb 37x53": Image.fromarray(noise[..., :3], "RGB"),
        "rgba": rgba,
        "palette": palette,
        "palette with transparency": transparent,
        "grayscale": Image.fromarray(noise[..., 0], "L"),
        "grayscale + alpha": Image.fromarray(noise[..., :2], "LA"),
        "16-bit grayscale": wide,
        "bilevel": Image.fromarray(noise[..., 0] > 127),
        "one pixel high": Image.fromarray(rng.integers(0, 256, (1, 301, 3), dtype=np.uint8)),
        "already 17 px": Image.fromarray(noise[:17, :17, :3], "RGB"),
    }


@pytest.mark.parametrize("name", list(odd_images()))
@pytest.mark.parametrize("size", [17, 224])
def test_resize_is_pils_bicubic_bit_for_bit_in_every_mode(name, size):
    data = png_bytes(odd_images()[name])
    expected = pil_reference(io.BytesIO(data), size)
    assert resized_pixels(data, size).dtype == np.uint8
    assert np.array_equal(resized_pixels(data, size), expected)
    assert np.array_equal(np.asarray(resize_like_dreamsim(open_rgb(data), size)), expected)


def test_resize_is_dreamsims_preprocess_on_the_sample_and_the_demo_images(sample_home):
    from dreamsim import preprocess

    frame = pd.read_csv(sample_home / "nights" / "data.csv")
    paths = [sample_home / "nights" / p for p in frame["ref_path"][:5]]
    paths += [sample_home / "nights" / p for p in frame["right_path"][:5]]
    if DEMO_IMAGES.is_dir():
        paths += sorted(DEMO_IMAGES.glob("*.png"))
    else:
        pytest.skip(f"{DEMO_IMAGES} is absent (the synthetic images are checked above)")
    for path in paths:
        ours = resized_pixels(path, 224)
        assert np.array_equal(ours, pil_reference(path, 224)), path
        upstream = (preprocess(Image.open(path))[0] * 255).round().byte().permute(1, 2, 0)
        assert np.array_equal(ours, upstream.numpy()), path


def test_a_bad_file_is_named(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(nights.ImageError, match=f"{bad}: not a readable image"):
        resized_pixels(bad, 16)


@pytest.fixture(scope="module")
def tables(sample_home, tmp_path_factory):
    """The sample's pre-resized copy at 24 px twice: as PNG and as raw pixels."""
    cache = tmp_path_factory.mktemp("tables")
    options = {"root": sample_home, "min_votes": None, "image_size": 24, "cache_dir": cache}
    return (
        load_nights("all", **options),
        load_nights("all", images="pixels", **options),
    )


def test_pixels_are_the_png_copys_decoded_pixels(tables):
    png, raw = tables
    assert raw.column_names == png.column_names and raw["id"] == png["id"]
    decoded = raw.with_format("numpy")
    for column in ("ref", "left", "right"):
        assert is_pixel_type(raw.data.schema.field(column).type)
        stored = to_numpy(raw.with_format("arrow")[:][column])
        assert stored.shape == (len(png), 24, 24, 3)
        expected = np.stack([np.asarray(image) for image in png[column]])
        assert np.array_equal(stored, expected)
        assert np.array_equal(decoded[3][column], expected[3])
    assert raw.with_format(None)[0]["left_path"] == png[0]["left_path"]


def test_a_chunk_is_a_view_of_the_memory_mapped_buffer(tables):
    _, raw = tables
    column = raw.data.column("ref")
    chunk = column.chunk(1)
    view = to_numpy(chunk)
    values = chunk.flatten().flatten().flatten()
    assert view.ctypes.data == values.buffers()[1].address + values.offset
    assert not view.flags.writeable and view.shape == (len(chunk), 24, 24, 3)
    assert raw.cache_files  # memory-mapped from the built Arrow files, not held in memory


@pytest.mark.parametrize("num_workers", [0, 2])
def test_to_torch_reads_pixels_without_any_decoder(tables, monkeypatch, num_workers):
    png, raw = tables
    expected = list(nights.torch_data.to_torch(png, batch_size=16, image_size=24))

    def no_decoding(*args, **kwargs):
        raise AssertionError("an image was decoded or resized")

    monkeypatch.setattr(Image, "open", no_decoding)
    monkeypatch.setattr(Image.Image, "resize", no_decoding)
    monkeypatch.setattr(nights.torch_data, "open_rgb", no_decoding)
    loader = nights.torch_data.to_torch(
        raw, batch_size=16, image_size=24, num_workers=num_workers, shuffle=False
    )
    batches = list(loader)
    assert len(batches) == len(expected)
    for ours, theirs in zip(batches, expected):
        for a, b in zip(ours, theirs):
            assert a.dtype == b.dtype and torch.equal(a, b)
    ref = batches[0][0]
    assert ref.shape == (16, 3, 24, 24) and ref.is_contiguous()


def test_to_torch_resizes_pixels_only_to_another_size(tables):
    png, raw = tables
    ours = next(iter(nights.torch_data.to_torch(raw, batch_size=4, image_size=16)))
    theirs = next(iter(nights.torch_data.to_torch(png, batch_size=4, image_size=16)))
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))


def test_images_leave_the_dataset_contiguous_so_batches_stack_fast(tables):
    for table in tables:
        item = nights.torch_data.TripletDataset(table, 24).__getitems__([5])[0]
        assert all(image.shape == (3, 24, 24) and image.is_contiguous() for image in item[:3])
    images = nights.audit.scoring.TableImages(tables[1], progress=False)
    assert images.tensor(images.keys["left"][3], None).is_contiguous()


def test_shuffled_rows_and_selections_gather_the_right_images(tables):
    png, raw = tables
    picked = [7, 2, 90, 41]
    ours = nights.torch_data.TripletDataset(raw.select(picked), 24).__getitems__([3, 0, 2])
    theirs = nights.torch_data.TripletDataset(png.select(picked), 24).__getitems__([3, 0, 2])
    for a, b in zip(ours, theirs):
        assert a[4] == b[4] and all(torch.equal(x, y) for x, y in zip(a[:3], b[:3]))


def test_pixels_cost_their_bytes_and_no_more(tables):
    _, raw = tables
    folder = Path(raw.cache_files[0]["filename"]).parent
    on_disk = sum(f.stat().st_size for f in folder.glob("shard-*.arrow"))
    pixels = len(raw) * 3 * 24 * 24 * 3
    assert pixels < on_disk < pixels * 1.05  # ids, votes, prompts and paths are the rest


def test_pixels_need_an_image_size(sample_home, cache_dir, capsys):
    with pytest.raises(ValueError, match="images='pixels' stores a pre-resized copy"):
        load_nights(root=sample_home, images="pixels", cache_dir=cache_dir)
    assert main(["build", "--root", str(sample_home), "--images", "pixels", "--quiet"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("nights build: error: images='pixels'") and error.count("\n") == 1


def _shard_files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.glob("shard-*.arrow"))}


@pytest.mark.parametrize("images", ["pixels", "path"])
def test_a_parallel_build_writes_the_same_shards_as_one_process(
    sample_home, tmp_path, monkeypatch, images
):
    monkeypatch.setattr(nights.table, "_SHARD_ROWS", 25)
    source = nights.table.resolve_source(sample_home)
    options = nights.table.BuildOptions(images, 20)
    one = nights.table.build_table(source, options, cache_dir=tmp_path / "one", jobs=1)
    every = nights.table.build_table(source, options, cache_dir=tmp_path / "every", jobs=2)
    assert len(_shard_files(one)) == 5
    assert _shard_files(one) == _shard_files(every)


def test_bad_images_found_by_parallel_workers_are_all_listed(sample_copy, cache_dir, monkeypatch):
    monkeypatch.setattr(nights.table, "_SHARD_ROWS", 10)
    frame = pd.read_csv(sample_copy / "nights" / "data.csv")
    root = sample_copy / "nights"
    bad = [(3, "left"), (57, "ref"), (110, "right")]
    for row, column in bad:  # garbled inside: the header check passes, decoding fails
        path = root / frame[f"{column}_path"][row]
        data = bytearray(path.read_bytes())
        data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64
        path.write_bytes(bytes(data))
    with pytest.raises(nights.IntegrityError) as error:
        load_nights(root=sample_copy, images="pixels", image_size=16, cache_dir=cache_dir, jobs=2)
    lines = str(error.value).splitlines()
    assert lines[0].startswith("3 image reference(s)")
    for (row, column), line in zip(bad, lines[1:4]):
        assert line.startswith(f"  id {frame['id'][row]}, {column}: {root}")
    partial = next(cache_dir.glob(".*.partial"))
    assert len(list(partial.glob("shard-*.arrow"))) == 12 - 3  # the good shards are kept


KILLED_BUILD = """
import sys, time
import nights.table
import nights.torch_data

real = nights.table.resized_pixels


def slow(path, size):  # slow enough to be killed halfway
    time.sleep(0.02)
    return real(path, size)


nights.table.resized_pixels = slow
nights.table._SHARD_ROWS = 10
source = nights.table.resolve_source(sys.argv[1])
nights.table.build_table(
    source, nights.table.BuildOptions("pixels", 16), cache_dir=sys.argv[2], jobs=2, progress=False
)
"""


@pytest.mark.slow
def test_a_parallel_build_killed_with_sigkill_resumes_keeping_its_shards(
    sample_home, tmp_path, monkeypatch
):
    psutil = pytest.importorskip("psutil")
    script = tmp_path / "build.py"
    script.write_text(KILLED_BUILD)
    cache = tmp_path / "tables"
    process = subprocess.Popen([sys.executable, str(script), str(sample_home), str(cache)])
    deadline = time.monotonic() + 120
    while len(list(cache.glob(".*.partial/shard-*.arrow"))) < 3:
        assert process.poll() is None and time.monotonic() < deadline, "the build ended early"
        time.sleep(0.05)
    workers = psutil.Process(process.pid).children()
    os.kill(process.pid, signal.SIGKILL)  # the parent only, as `kill -9 PID` does
    process.wait()
    _, alive = psutil.wait_procs(workers, timeout=10)
    for orphan in alive:  # never left running, even when the test fails
        orphan.kill()
    assert len(workers) == 2 and not alive, "the workers outlived their parent"

    partial = next(cache.glob(".*.partial"))
    kept = {path.name: path.stat() for path in partial.glob("shard-*.arrow")}
    assert 3 <= len(kept) < 12
    monkeypatch.setattr(nights.table, "_SHARD_ROWS", 10)
    source = nights.table.resolve_source(sample_home)
    options = nights.table.BuildOptions("pixels", 16)
    resumed = nights.table.build_table(source, options, cache_dir=cache, jobs=2)
    for name, before in kept.items():  # untouched: the same file, not a rewritten copy
        after = (resumed / name).stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert not [p for p in resumed.iterdir() if p.name.startswith(".")]  # no leftovers
    one = nights.table.build_table(source, options, cache_dir=tmp_path / "one", jobs=1)
    assert _shard_files(resumed) == _shard_files(one)
    table = nights.table.open_table(resumed)
    assert table["id"] == pd.read_csv(sample_home / "nights" / "data.csv")["id"].tolist()
    assert isinstance(table.data.column("ref").chunk(0), pa.FixedSizeListArray)


def _pixel_column(shape, value_type, null_level, rows, seed) -> pa.Array:
    """``rows`` images of ``shape`` as nested fixed-size lists of ``value_type``; one null put
    at ``null_level`` (0: an image, 1: a row of pixels, 2: a pixel, 3: a value; else none)."""
    rng = np.random.default_rng(seed)
    sizes = (rows, *shape)

    def mask(level: int):
        if level != null_level:
            return None
        count = int(np.prod(sizes[: level + 1]))
        flags = np.zeros(count, dtype=bool)
        flags[rng.integers(count)] = True
        return flags

    values = rng.integers(0, 128, int(np.prod(sizes)))
    column = pa.array(values, type=value_type, mask=mask(len(shape)))
    for level in reversed(range(len(shape))):
        flags = mask(level)
        column = pa.FixedSizeListArray.from_arrays(
            column, shape[level], mask=None if flags is None else pa.array(flags)
        )
    return column


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shape=st.one_of(
        st.sampled_from([(6, 6, 3), (6, 6, 4), (6, 5, 3), (6, 6, 1), (6, 6), (6,), (2, 2, 2, 3)])
    ),
    value_type=st.sampled_from([pa.uint8(), pa.int16(), pa.float32(), pa.int8()]),
    null_level=st.integers(0, 5),
    rows=st.integers(1, 4),
    seed=st.integers(0, 2**16),
    chunked=st.booleans(),
)
def test_hostile_pixel_tables_are_read_or_refused_in_one_line(
    shape, value_type, null_level, rows, seed, chunked
):
    from datasets import Dataset
    from datasets.table import InMemoryTable

    from nights.audit.scoring import TableImages

    hostile = _pixel_column(shape, value_type, null_level, rows, seed)
    good = _pixel_column((6, 6, 3), pa.uint8(), None, rows, seed + 1)
    columns = {
        "ref": pa.chunked_array([hostile[:1], hostile[1:]]) if chunked else hostile,
        "left": good,
        "right": good,
        "right_vote": pa.array(np.linspace(0, 1, rows)),
        "id": pa.array(np.arange(100, 100 + rows)),
    }
    table = Dataset(InMemoryTable(pa.table(columns)))
    valid = shape == (6, 6, 3) and value_type == pa.uint8() and null_level > len(shape)
    for read in (
        lambda: nights.torch_data.TripletDataset(table, 6).__getitems__(list(range(rows))),
        lambda: TableImages(table, progress=False).tensor(
            TableImages(table, progress=False).keys["ref"][-1], None
        ),
    ):
        try:
            result = read()
        except nights.NightsError as error:
            assert not valid, error
            message = str(error)
            assert "\n" not in message and message.startswith("ref")
            assert "rebuild the table" in message
            if "null" in message:
                assert any(f"triplet {i}" in message for i in range(100, 100 + rows))
        else:
            assert valid
            assert result is not None


@settings(max_examples=40, deadline=None)
@given(cut=st.floats(0, 0.999))
def test_a_truncated_pixel_shard_is_named_in_one_line(tables, cut):
    _, raw = tables
    source = Path(raw.cache_files[0]["filename"]).parent
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(shutil.copytree(source, Path(scratch) / "table"))
        path = folder / "shard-00000.arrow"
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * cut)])
        with pytest.raises(nights.IntegrityError) as error:
            for row in nights.torch_data.to_torch(nights.table.open_table(folder), 64, 24):
                assert row
        message = str(error.value)
        assert "\n" not in message and message.startswith(f"{path}: not a readable table shard")
        assert message.endswith("`nights build --rebuild`)")


def test_the_audit_scores_and_reports_a_pixel_table_as_its_png_copy(tables, tmp_path):
    from nights.audit import audit_frame, score_table, summarize, write_report

    raw = tables[1]
    scores = [
        score_table(table, ["psnr"], cache=tmp_path / f"{n}.sqlite", progress=False)
        for n, table in enumerate(tables)
    ]
    pd.testing.assert_frame_equal(scores[0], scores[1])
    audit = audit_frame(scores[1], raw)
    write_report(tmp_path / "report.html", audit, summarize(audit), raw)
    thumbnails = (tmp_path / "report.html").read_text().count("data:image/jpeg;base64")
    assert thumbnails == 3 * min(24, int((~audit["agree"]).sum())) > 0
