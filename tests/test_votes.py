"""Vote statistics, filters, and splits written in the NIGHTS and Parquet formats."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import datasets
import numpy as np
import pandas as pd
import pytest

import nights.splits
from nights import NightsError, load_nights
from nights.errors import ArgumentError, OutputExistsError
from nights.schema import DATA_CSV_COLUMNS
from nights.splits import write_split
from nights.votes import agreement_stats, filter_votes


@pytest.fixture
def every_row(sample_home, cache_dir):
    return load_nights("all", root=sample_home, min_votes=None, cache_dir=cache_dir)


@pytest.fixture
def unfiltered(sample_home, cache_dir):
    return load_nights(
        "all", root=sample_home, variant="unfiltered", min_votes=None, cache_dir=cache_dir
    )


def test_agreement_stats_by_hand(unfiltered, sample_home):
    raw = pd.read_csv(sample_home / "nights_unfiltered" / "nights_raw.csv")
    majority = np.maximum(raw["left_vote"], raw["right_vote"])
    overall = agreement_stats(unfiltered, by=None).loc["all"]
    assert overall["triplets"] == len(raw)
    assert overall["votes_mean"] == pytest.approx(raw["num_votes"].mean())
    assert overall["agreement"] == pytest.approx(majority.mean())
    assert overall["unanimous"] == pytest.approx((majority == 1).mean())
    assert overall["right_share"] == pytest.approx(raw["right_vote"].mean())
    by_votes = agreement_stats(unfiltered, by="votes")
    for count, group in raw.groupby("num_votes"):
        assert by_votes.loc[count, "triplets"] == len(group)
        assert by_votes.loc[count, "agreement"] == pytest.approx(majority[group.index].mean())


def test_agreement_stats_groupings(every_row, sample_home):
    frame = pd.read_csv(sample_home / "nights" / "data.csv")
    by_split = agreement_stats(every_row, by="split")
    assert by_split["triplets"].to_dict() == frame["split"].value_counts().to_dict()
    assert (by_split["unanimous"] == 1.0).all()
    assert agreement_stats(every_row, by="prompt")["triplets"].sum() == len(frame)
    with pytest.raises(ArgumentError, match="by must be one of"):
        agreement_stats(every_row, by="colour")


def test_filters_match_pandas(unfiltered, sample_home):
    raw = pd.read_csv(sample_home / "nights_unfiltered" / "nights_raw.csv")
    majority = np.maximum(raw["left_vote"], raw["right_vote"])
    cases = [
        ({"min_votes": 5}, raw["num_votes"] >= 5),
        ({"max_votes": 4}, raw["num_votes"] <= 4),
        ({"min_agreement": 0.75}, majority >= 0.75),
        ({"unanimous": True}, majority == 1),
        ({"unanimous": False}, majority < 1),
        ({"ids": [1, 2, 3, 999]}, raw["id"].isin([1, 2, 3])),
        (
            {"exclude_ids": [0, 4], "min_votes": 3},
            ~raw["id"].isin([0, 4]) & (raw["num_votes"] >= 3),
        ),
    ]
    for arguments, expected in cases:
        assert filter_votes(unfiltered, **arguments)["id"] == raw["id"][expected].tolist(), (
            arguments
        )


def test_ids_from_a_file(every_row, tmp_path):
    path = tmp_path / "ids.txt"
    wanted = every_row["id"][:3]
    path.write_text(f"# chosen by hand\n{wanted[0]}\n\n{wanted[1]}  # this one too\n{wanted[2]}\n")
    assert filter_votes(every_row, ids=path)["id"] == wanted
    path.write_text("12\ntwelve\n")
    with pytest.raises(NightsError, match=r"ids.txt: line 2: 'twelve' is not a triplet id"):
        filter_votes(every_row, ids=path)
    with pytest.raises(ArgumentError, match="min_agreement"):
        filter_votes(every_row, min_agreement=1.5)


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_write_nights_folder_reads_back_with_provenance(
    every_row, sample_home, tmp_path, cache_dir
):
    strict = filter_votes(every_row, min_votes=8, exclude_ids=[every_row["id"][0]])
    out = write_split(strict, tmp_path / "strict", note="votes >= 8")
    assert (out / "data.csv").read_text().splitlines()[0] == ",".join(DATA_CSV_COLUMNS)
    again = load_nights("all", root=out, min_votes=None, cache_dir=cache_dir)
    for column in ("id", "ref_path", "left_path", "right_path", "prompt", "votes", "is_imagenet"):
        assert again[column] == strict[column]
    source = sample_home / "nights" / strict[0]["left_path"]
    copy = out / strict[0]["left_path"]
    assert os.path.samefile(source, copy)  # hard link on the same disk
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["source"]["csv"] == _sha(sample_home / "nights" / "data.csv")
    assert provenance["filters"][-1] == {"min_votes": 8, "exclude_ids": [every_row["id"][0]]}
    assert provenance["rows"] == len(strict) and provenance["note"] == "votes >= 8"
    assert sum(provenance["counts"].values()) == len(strict)
    assert provenance["placed_by"] == {"hardlink": 3 * len(strict)}


def test_copy_and_symlink_modes(every_row, tmp_path):
    few = filter_votes(every_row, ids=every_row["id"][:4])
    copied = write_split(few, tmp_path / "copied", link="copy")
    linked = write_split(few, tmp_path / "linked", link="symlink")
    relative = few[0]["ref_path"]
    assert not os.path.samefile(copied / relative, linked / relative)
    assert (linked / relative).is_symlink() and not (copied / relative).is_symlink()
    assert _sha(copied / relative) == _sha(linked / relative)


def test_originals_are_written_from_a_resized_table(sample_home, tmp_path, cache_dir):
    small = load_nights("val", root=sample_home, image_size=16, cache_dir=cache_dir)
    out = write_split(small, tmp_path / "val")
    relative = small[0]["ref_path"]
    assert _sha(out / relative) == _sha(sample_home / "nights" / relative)


def test_parquet_reads_back_with_images_embedded(every_row, sample_home, tmp_path):
    out = write_split(every_row, tmp_path / "pq", format="parquet", shard_rows=40)
    names = sorted(p.name for p in (out / "data").iterdir())
    assert "train-00000-of-00002.parquet" in names and "test-00000-of-00001.parquet" in names
    loaded = datasets.load_dataset("parquet", data_dir=str(out))
    assert set(loaded) == {"train", "val", "test"}
    test = loaded["test"]
    expected = pd.read_csv(sample_home / "nights" / "data.csv").query("split == 'test'")
    assert test["id"] == expected["id"].tolist()
    storage = test.cast_column("ref", datasets.Image(decode=False))[0]["ref"]
    assert storage["bytes"] == (sample_home / "nights" / test[0]["ref_path"]).read_bytes()
    assert storage["path"] == test[0]["ref_path"]
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["format"] == "parquet" and len(provenance["files"]) == len(names)


def test_existing_output_is_kept_unless_overwrite(every_row, tmp_path):
    out = write_split(filter_votes(every_row, ids=every_row["id"][:2]), tmp_path / "o")
    before = (out / "data.csv").read_text()
    with pytest.raises(OutputExistsError):  # a NightsError, and a FileExistsError
        write_split(every_row, out)
    assert (out / "data.csv").read_text() == before
    write_split(filter_votes(every_row, ids=every_row["id"][:5]), out, overwrite=True)
    assert len(pd.read_csv(out / "data.csv")) == 5


def test_interrupted_write_leaves_nothing_that_looks_complete(every_row, tmp_path, monkeypatch):
    out = write_split(filter_votes(every_row, ids=every_row["id"][:2]), tmp_path / "o")
    calls = []
    real_place = nights.splits._place_file

    def fail_midway(source, target, link):
        calls.append(target)
        if len(calls) == 30:
            raise OSError("disk full")
        return real_place(source, target, link)

    monkeypatch.setattr(nights.splits, "_place_file", fail_midway)
    with pytest.raises(OSError, match="disk full"):
        write_split(every_row, tmp_path / "new")
    with pytest.raises(OSError, match="disk full"):
        calls.clear()
        write_split(every_row, out, overwrite=True)
    assert not (tmp_path / "new").exists()
    assert len(pd.read_csv(out / "data.csv")) == 2  # the earlier split is intact
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name or "old" in p.name]


def test_write_split_rejects_bad_requests(every_row, tmp_path):
    with pytest.raises(ArgumentError, match="format must be"):
        write_split(every_row, tmp_path / "x", format="zip")
    with pytest.raises(NightsError, match="no rows"):
        write_split(filter_votes(every_row, ids=[-1]), tmp_path / "x")


def _tree(folder) -> dict[str, str]:
    """Every entry under ``folder``: file digests, and symlinks as where they point."""
    return {
        str(p.relative_to(folder)): os.readlink(p) if p.is_symlink() else _sha(p)
        for p in sorted(folder.rglob("*"))
        if p.is_symlink() or p.is_file()
    }


@pytest.mark.parametrize(
    ("out", "relation"),
    [
        ("home/nights", "is"),
        ("home", "holds"),
        ("home/nights/ref/extra", "lies inside"),
        ("link-to-release", "is"),
        ("link-to-release/sub", "lies inside"),
    ],
)
def test_write_split_refuses_to_write_over_its_source(
    sample_copy, tmp_path, cache_dir, out, relation
):
    (tmp_path / "link-to-release").symlink_to(sample_copy / "nights")
    table = load_nights("all", root=sample_copy, min_votes=None, cache_dir=cache_dir)
    before = _tree(sample_copy)
    with pytest.raises(NightsError, match=f"refusing to write .*: it {relation} .*read from"):
        write_split(table, tmp_path / out, link="symlink", overwrite=True)
    assert _tree(sample_copy) == before


def test_filter_onto_its_own_source_is_refused_by_the_cli(sample_copy, capsys):
    from nights.cli import main

    before = _tree(sample_copy)
    for out in (sample_copy / "nights", sample_copy):
        command = ["filter", "--root", str(sample_copy), "--split", "all", "--min-votes", "1"]
        command += ["--out", str(out), "--overwrite", "--link", "symlink", "--quiet"]
        assert main(command) == 2
        error = capsys.readouterr().err
        assert error.startswith("nights filter: error: refusing to write")
        assert error.count("\n") == 1
    assert _tree(sample_copy) == before


def _dead_pid() -> int:
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    return finished.pid


def test_a_killed_write_leaves_a_partial_folder_that_the_next_write_removes(
    sample_home, tmp_path, cache_dir
):
    """kill -9 in the middle of write_split, for real; a live writer's folder is left alone."""
    out = tmp_path / "strict"
    script = (
        "import sys, time\n"
        "import nights.splits as splits\n"
        "from nights import load_nights\n"
        "real = splits._place_file\n"
        "def slow(*args):\n"
        "    time.sleep(0.2)\n"
        "    return real(*args)\n"
        "splits._place_file = slow\n"
        f"table = load_nights('all', root={str(sample_home)!r}, min_votes=None,"
        f" cache_dir={str(cache_dir)!r})\n"
        f"splits.write_split(table, {str(out)!r})\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", script])
    partial = tmp_path / f".strict.partial-{writer.pid}"
    deadline = time.monotonic() + 120
    while not (partial.is_dir() and any(partial.rglob("*.png"))):
        assert writer.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert partial.is_dir() and not out.exists()
    live = tmp_path / f".strict.partial-{os.getpid()}-elsewhere"
    live.mkdir()  # not a leftover name: kept
    own = tmp_path / f".strict.partial-{os.getppid()}"
    own.mkdir()  # a live process (this test's parent): kept
    table = load_nights("all", root=sample_home, min_votes=None, cache_dir=cache_dir)
    write_split(filter_votes(table, ids=table["id"][:3]), out)
    assert not partial.exists() and live.is_dir() and own.is_dir()
    assert len(pd.read_csv(out / "data.csv")) == 3


def test_an_output_moved_aside_by_a_killed_overwrite_is_put_back(every_row, tmp_path):
    out = tmp_path / "o"
    write_split(filter_votes(every_row, ids=every_row["id"][:2]), out)
    dead = _dead_pid()
    os.replace(out, tmp_path / f".o.old-{dead}")  # killed between its two renames
    (tmp_path / f".o.partial-{dead}").mkdir()
    with pytest.raises(FileExistsError):
        write_split(every_row, out)
    assert len(pd.read_csv(out / "data.csv")) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".o.")]
