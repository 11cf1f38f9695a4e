"""load_nights: the rows upstream keeps, built once, memory-mapped, errors that name places."""

from __future__ import annotations

import io
import time

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import nights.table
from nights import (
    DatasetNotFoundError,
    IntegrityError,
    NightsError,
    SchemaError,
    load_jnd,
    load_nights,
)


def upstream_view(root, split):
    """What upstream's loader keeps: pandas, votes >= 6, then the split (and is_imagenet)."""
    frame = pd.read_csv(root / "nights" / "data.csv")
    frame = frame[frame["votes"] >= 6]
    base = "test" if split.startswith("test") else split
    frame = frame[frame["split"] == base]
    if split == "test_imagenet":
        frame = frame[frame["is_imagenet"]]
    if split == "test_no_imagenet":
        frame = frame[~frame["is_imagenet"]]
    return frame


@pytest.mark.parametrize("split", ["train", "val", "test", "test_imagenet", "test_no_imagenet"])
def test_rows_equal_upstreams_filter_with_paths_as_given(sample_home, cache_dir, split):
    table = load_nights(split, root=sample_home, cache_dir=cache_dir)
    expected = upstream_view(sample_home, split)
    assert len(table) == len(expected) > 0
    assert table["id"] == expected["id"].tolist()
    for column in ("ref_path", "left_path", "right_path", "prompt"):
        assert table[column] == expected[column].tolist()
    assert table["right_vote"] == expected["right_vote"].astype(float).tolist()


def test_columns_features_and_decoded_images(sample_home, cache_dir):
    table = load_nights("test", root=sample_home, cache_dir=cache_dir)
    assert table.column_names == [
        "id",
        "ref",
        "left",
        "right",
        "left_vote",
        "right_vote",
        "votes",
        "split",
        "is_imagenet",
        "prompt",
        "ref_path",
        "left_path",
        "right_path",
    ]
    assert type(table.features["ref"]).__name__ == "Image"
    row = table[0]
    original = Image.open(sample_home / "nights" / row["left_path"])
    assert np.array_equal(np.asarray(row["left"]), np.asarray(original))
    assert isinstance(row["is_imagenet"], bool) and isinstance(row["votes"], int)


def test_min_votes_none_all_and_dataset_dict(sample_home, cache_dir):
    frame = pd.read_csv(sample_home / "nights" / "data.csv")
    every = load_nights("all", root=sample_home, min_votes=None, cache_dir=cache_dir)
    assert len(every) == len(frame)
    strict = load_nights("all", root=sample_home, min_votes=9, cache_dir=cache_dir)
    assert len(strict) == (frame["votes"] >= 9).sum()
    splits = load_nights(None, root=sample_home, cache_dir=cache_dir)
    assert set(splits) == {"train", "val", "test"}
    assert sum(len(part) for part in splits.values()) == (frame["votes"] >= 6).sum()


def test_root_can_be_the_release_folder_or_the_one_above(sample_home, cache_dir):
    above = load_nights("val", root=sample_home, cache_dir=cache_dir)
    inside = load_nights("val", root=sample_home / "nights", cache_dir=cache_dir)
    assert above["id"] == inside["id"]


def test_default_root_is_nights_home_and_its_absence_says_how_to_download(
    monkeypatch, tmp_path, sample_home
):
    monkeypatch.setenv("NIGHTS_HOME", str(tmp_path / "empty"))
    with pytest.raises(DatasetNotFoundError) as error:
        load_nights()
    assert "nights download" in str(error.value) and str(tmp_path / "empty") in str(error.value)
    monkeypatch.setenv("NIGHTS_HOME", str(sample_home))
    monkeypatch.setattr(nights._paths, "table_cache_dir", lambda _=None: tmp_path / "tables")
    assert len(load_nights("test")) == len(upstream_view(sample_home, "test"))


def test_bad_arguments(sample_home, cache_dir):
    with pytest.raises(ValueError, match="split must be one of"):
        load_nights("testing", root=sample_home, cache_dir=cache_dir)
    with pytest.raises(ValueError, match="variant must be one of"):
        load_nights(root=sample_home, variant="full", cache_dir=cache_dir)
    with pytest.raises(ValueError, match="images must be"):
        load_nights(root=sample_home, images="jpeg", cache_dir=cache_dir)


def test_second_load_is_fast_and_decodes_nothing(sample_home, cache_dir, monkeypatch):
    load_nights("test", root=sample_home, cache_dir=cache_dir)
    folders = list(cache_dir.iterdir())

    def no_decoding(*args, **kwargs):
        raise AssertionError("an image was opened during a warm load")

    monkeypatch.setattr(Image, "open", no_decoding)
    monkeypatch.setattr(nights.table, "read_source_csv", no_decoding)
    started = time.perf_counter()
    table = load_nights("test", root=sample_home, cache_dir=cache_dir)
    assert time.perf_counter() - started < 1.0
    assert len(table) > 0 and list(cache_dir.iterdir()) == folders
    assert table.cache_files and all(
        f["filename"].startswith(str(cache_dir)) for f in table.cache_files
    )


def test_cache_is_keyed_by_csv_content(sample_copy, cache_dir):
    first = load_nights("all", root=sample_copy, min_votes=None, cache_dir=cache_dir)
    csv_path = sample_copy / "nights" / "data.csv"
    lines = csv_path.read_text().splitlines()
    csv_path.write_text("\n".join(lines[:-5]) + "\n")
    second = load_nights("all", root=sample_copy, min_votes=None, cache_dir=cache_dir)
    assert len(second) == len(first) - 5
    assert len([p for p in cache_dir.iterdir() if not p.name.startswith(".")]) == 2


def test_missing_and_corrupt_images_are_all_reported(sample_copy, cache_dir):
    frame = pd.read_csv(sample_copy / "nights" / "data.csv")
    root = sample_copy / "nights"
    (root / frame["ref_path"][3]).unlink()
    (root / frame["right_path"][10]).unlink()
    (root / frame["left_path"][20]).write_bytes(b"not a png at all")
    with pytest.raises(IntegrityError) as error:
        load_nights("all", root=sample_copy, min_votes=None, cache_dir=cache_dir)
    message = str(error.value)
    assert message.startswith("3 image reference(s)")
    for row, column, reason in (
        (3, "ref", "missing"),
        (10, "right", "missing"),
        (20, "left", "not a readable image"),
    ):
        path = root / frame[f"{column}_path"][row]
        assert f"id {frame['id'][row]}, {column}: {path}: {reason}" in message
    assert not [p for p in cache_dir.iterdir() if not p.name.startswith(".")]


def test_truncated_image_is_found_when_resizing(sample_copy, cache_dir):
    frame = pd.read_csv(sample_copy / "nights" / "data.csv")
    path = sample_copy / "nights" / frame["left_path"][5]
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(IntegrityError, match=f"id {frame['id'][5]}, left: .*truncated"):
        load_nights("all", root=sample_copy, min_votes=None, image_size=16, cache_dir=cache_dir)


def test_bad_csv_raises_schema_error_and_builds_nothing(sample_copy, cache_dir):
    csv_path = sample_copy / "nights" / "data.csv"
    csv_path.write_text(csv_path.read_text().replace(",True,", ",Yes please,", 1))
    with pytest.raises(SchemaError, match=r"line \d+: column 'is_imagenet': 'Yes please'"):
        load_nights(root=sample_copy, cache_dir=cache_dir)
    assert not [p for p in cache_dir.iterdir() if not p.name.startswith(".")]


def test_interrupted_build_resumes_from_finished_shards(sample_copy, cache_dir, monkeypatch):
    monkeypatch.setattr(nights.table, "_SHARD_ROWS", 25)
    real_write = nights.table._write_arrow
    written = []

    def crash_on_third(batches, schema, path):
        if len(written) == 2:
            raise KeyboardInterrupt
        written.append(path.name)
        real_write(batches, schema, path)

    monkeypatch.setattr(nights.table, "_write_arrow", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        load_nights("all", root=sample_copy, min_votes=None, cache_dir=cache_dir)
    assert not [p for p in cache_dir.iterdir() if not p.name.startswith(".")]

    resumed = []
    monkeypatch.setattr(
        nights.table,
        "_write_arrow",
        lambda batches, schema, path: (
            resumed.append(path.name),
            real_write(batches, schema, path),
        ),
    )
    table = load_nights("all", root=sample_copy, min_votes=None, cache_dir=cache_dir)
    assert resumed == ["shard-00002.arrow", "shard-00003.arrow", "shard-00004.arrow"]
    assert table["id"] == pd.read_csv(sample_copy / "nights" / "data.csv")["id"].tolist()


def test_pre_resized_copy_matches_dreamsims_resize(sample_home, cache_dir):
    table = load_nights("test", root=sample_home, image_size=32, cache_dir=cache_dir)
    row = table[0]
    original = Image.open(sample_home / "nights" / row["ref_path"]).convert("RGB")
    expected = original.resize((32, 32), Image.Resampling.BICUBIC)
    assert row["ref"].size == (32, 32)
    assert np.array_equal(np.asarray(row["ref"]), np.asarray(expected))


def test_embedded_bytes_are_the_original_files(sample_home, cache_dir):
    table = load_nights("val", root=sample_home, images="bytes", cache_dir=cache_dir)
    storage = table.with_format("arrow")[0:1].column("right").to_pylist()[0]
    path = sample_home / "nights" / table[0]["right_path"]
    assert storage["bytes"] == path.read_bytes()
    assert storage["path"] == table[0]["right_path"]
    assert Image.open(io.BytesIO(storage["bytes"])).size == (48, 48)


def test_unfiltered_variant_keeps_unknown_columns(sample_home, cache_dir):
    table = load_nights(
        "all", root=sample_home, variant="unfiltered", min_votes=None, cache_dir=cache_dir
    )
    raw = pd.read_csv(sample_home / "nights_unfiltered" / "nights_raw.csv")
    assert len(table) == len(raw) and table["round"] == raw["round"].astype(str).tolist()
    assert table[0]["ref"].size == (48, 48)
    kept = load_nights("all", root=sample_home, variant="unfiltered", cache_dir=cache_dir)
    assert len(kept) == (raw["num_votes"] >= 6).sum()
    with pytest.raises(NightsError, match="no row has split 'test'"):
        load_nights("test", root=sample_home, variant="unfiltered", cache_dir=cache_dir)


def test_load_jnd(sample_home, cache_dir):
    table = load_jnd(root=sample_home, cache_dir=cache_dir)
    raw = pd.read_csv(sample_home / "jnd_votes.csv")
    assert len(table) == len(raw)
    assert table["same"] == raw["same"].tolist()
    assert table[0]["distort"].size == (48, 48)
    # The nights/ folder works as root too, with jnd_votes.csv beside it.
    assert len(load_jnd(root=sample_home / "nights", cache_dir=cache_dir)) == len(raw)
