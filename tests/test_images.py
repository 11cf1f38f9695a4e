"""Bad image files (cut short, corrupt, oversized, 16-bit), named by every command meeting them."""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from nights import ImageError, IntegrityError, load_nights
from nights.cli import main
from nights.images import PNG_SIGNATURE, check_image, inspect_image, open_rgb
from nights.verify import verify_folder


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def oversized_png(side: int = 30000) -> bytes:
    """A grey PNG of side x side whose header is all Pillow needs to refuse it."""
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\0" * (side + 1) * 8)
    return PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", rows) + _chunk(b"IEND", b"")


def corrupt_but_complete(path: Path) -> None:
    """Garbles the middle of the pixel data; the header and the end stay as they were."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))
    assert check_image(path, decode=False) is None and check_image(path, decode=True)


def sixteen_bit_png(path: Path, side: int) -> None:
    values = np.linspace(0, 65535, side * side).reshape(side, side).astype(np.uint16)
    Image.fromarray(values).save(path)


@pytest.fixture
def damaged(sample_copy):
    """The sample with one image cut short (row 5, left) and one oversized (row 9, ref)."""
    frame = pd.read_csv(sample_copy / "nights" / "data.csv")
    root = sample_copy / "nights"
    cut = root / frame["left_path"][5]
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    (root / frame["ref_path"][9]).write_bytes(oversized_png())
    return sample_copy, frame


def _expected_lines(home: Path, frame) -> list[str]:
    root = home / "nights"
    return [
        f"id {frame['id'][5]}, left: {root / frame['left_path'][5]}: truncated",
        f"id {frame['id'][9]}, ref: {root / frame['ref_path'][9]}: too large to decode: "
        "900,000,000 pixels",
    ]


def test_build_without_decoding_lists_cut_short_and_oversized_images(damaged, cache_dir):
    home, frame = damaged
    with pytest.raises(IntegrityError) as error:
        load_nights("all", root=home, min_votes=None, cache_dir=cache_dir)
    message = str(error.value)
    assert message.startswith("2 image reference(s)")
    for line in _expected_lines(home, frame):
        assert line in message


def test_build_of_a_resized_copy_lists_them_too(damaged, cache_dir):
    home, frame = damaged
    with pytest.raises(IntegrityError) as error:
        load_nights("all", root=home, min_votes=None, image_size=16, cache_dir=cache_dir)
    for line in _expected_lines(home, frame):
        assert line in str(error.value)


def test_verify_lists_them_and_the_cli_exits_1(damaged, capsys):
    home, frame = damaged
    report = verify_folder(home, progress=False)
    assert not report.ok
    assert [(p["id"], p["column"]) for p in report.problems] == [
        (frame["id"][5], "left"),
        (frame["id"][9], "ref"),
    ]
    assert main(["verify", "--root", str(home), "--quiet"]) == 1
    printed = capsys.readouterr().out
    for line in _expected_lines(home, frame):
        assert line in printed


def test_every_command_names_the_oversized_file(damaged, tmp_path, capsys):
    home, frame = damaged
    bad = str(home / "nights" / frame["ref_path"][9])
    for command in (
        ["build", "--root", str(home), "--quiet"],
        ["filter", "--root", str(home), "--out", str(tmp_path / "f"), "--quiet"],
        ["audit", "--root", str(home), "--split", "all", "--metric", "psnr", "--quiet"],
    ):
        assert main(command) == 2
        error = capsys.readouterr().err
        assert error.startswith(f"nights {command[0]}: error: ") and bad in error
        assert "900,000,000 pixels" in error and "Traceback" not in error


@pytest.mark.parametrize("workers", [0, 1])
def test_audit_names_file_and_triplet_of_an_image_it_cannot_decode(
    sample_copy, tmp_path, capsys, workers
):
    """Cut in the middle but complete at both ends: the build (headers only) lets it through."""
    frame = pd.read_csv(sample_copy / "nights" / "data.csv")
    row = frame[frame["votes"] >= 6].index[0]
    path = sample_copy / "nights" / frame["right_path"][row]
    corrupt_but_complete(path)
    command = ["audit", "--root", str(sample_copy), "--split", "all", "--metric", "psnr"]
    command += ["--num-workers", str(workers), "--cache", str(tmp_path / "c.db")]
    command += ["--out", str(tmp_path / "out"), "--quiet"]
    assert main(command) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"nights audit: error: triplet {frame['id'][row]}, right: {path}: ")
    assert "cannot be decoded" in error and error.count("\n") == 1


def test_sixteen_bit_images_are_named_with_a_warning_and_still_ok(sample_copy, capsys):
    frame = pd.read_csv(sample_copy / "nights" / "data.csv")
    path = sample_copy / "nights" / frame["ref_path"][0]
    sixteen_bit_png(path, Image.open(path).size[0])
    assert (np.asarray(open_rgb(path))[-1] == 255).all()  # what upstream's RGB conversion does
    report = verify_folder(sample_copy, progress=False)
    assert report.ok
    assert {(w["id"], w["column"], w["path"]) for w in report.warnings} == {
        (int(i), "ref", str(path)) for i in frame["id"][frame["ref_path"] == frame["ref_path"][0]]
    }
    assert "above 255 becomes white, as upstream DreamSim" in report.warnings[0]["warning"]
    assert main(["verify", "--root", str(sample_copy), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"{path}: I;16 pixels" in printed and printed.rstrip().endswith("OK, 1 warning(s)")


def test_open_rgb_names_the_file_whatever_pillow_raises(tmp_path):
    for name, data in (
        ("bomb.png", oversized_png()),
        ("text.png", b"hello"),
        ("cut.png", oversized_png(64)[:40]),
    ):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ImageError, match=f"^{re.escape(str(path))}: "):
            open_rgb(path)
        with pytest.raises(ImageError, match=r"^image bytes: "):
            open_rgb(data)
        assert inspect_image(path, decode=True).problem
    with pytest.raises(ImageError, match=f"^{re.escape(str(tmp_path / 'absent.png'))}: missing$"):
        open_rgb(tmp_path / "absent.png")
