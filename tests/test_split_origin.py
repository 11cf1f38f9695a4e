"""The vote filter follows where a table comes from, filters that leave no row say so, and a
Parquet split reads back like a folder (issue 13: a new campaign's split loaded empty)."""

from __future__ import annotations

import io
import json
import logging
import re
import shutil

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nights import load_nights
from nights.cli import main
from nights.errors import NightsError, SchemaError
from nights.splits import write_split
from nights.table import origin_min_votes, resolve_source
from nights.votes import filter_votes


@pytest.fixture
def campaign_split(sample_home, tmp_path, capsys):
    """What `nights annotate aggregate --out` writes for a campaign of 4 votes per test
    triplet: the command the issue ran."""
    test = load_nights("test", root=sample_home, min_votes=None)
    lines = ["triplet_id,worker,label,swapped,rt_ms"]
    for number, triplet in enumerate(test["id"]):
        for worker in range(4):
            lines.append(
                f"{triplet},w{worker},{'left' if (number + worker) % 3 else 'right'},0,900"
            )
    votes = tmp_path / "votes.csv"
    votes.write_text("\n".join(lines) + "\n")
    out = tmp_path / "new"
    arguments = ["annotate", "aggregate", "--votes", str(votes), "--root", str(sample_home)]
    assert main([*arguments, "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    return out, len(test)


def test_a_new_campaigns_split_keeps_its_rows(campaign_split, caplog):
    out, triplets = campaign_split
    with caplog.at_level(logging.WARNING):
        new = load_nights(split="test", root=out)
    assert len(new) == triplets and set(new["votes"]) == {4}  # was 0 rows, silently
    assert not caplog.records
    assert origin_min_votes(resolve_source(out)) is None


def test_the_release_keeps_upstreams_view(sample_home):
    frame = pd.read_csv(sample_home / "nights" / "data.csv")
    test = load_nights("test", root=sample_home)
    assert test["id"] == frame[(frame["split"] == "test") & (frame["votes"] >= 6)]["id"].tolist()
    assert origin_min_votes(resolve_source(sample_home)) == 6


def test_a_split_written_with_a_vote_filter_keeps_its_policy(sample_home, tmp_path):
    strict = filter_votes(load_nights("all", root=sample_home, min_votes=None), min_votes=8)
    out = write_split(strict, tmp_path / "min8")
    assert origin_min_votes(resolve_source(out)) == 8
    assert load_nights("all", root=out)["id"] == strict["id"]
    # merged new votes after it: the earlier filter no longer describes them
    steps = [{"min_votes": 8}, {"votes_from": "annotation"}, {"unanimous": True}]
    provenance = json.loads((out / "provenance.json").read_text())
    (out / "provenance.json").write_text(json.dumps({**provenance, "filters": steps}))
    assert origin_min_votes(resolve_source(out)) is None


def test_a_filter_that_leaves_no_row_names_itself(campaign_split, sample_home, caplog):
    out, triplets = campaign_split
    with caplog.at_level(logging.WARNING, logger="nights.table"):
        assert len(load_nights("test", root=out, min_votes=6)) == 0
    message = caplog.records[-1].getMessage()
    assert f"min_votes=6 (votes >= 6) leaves none of the {triplets} row(s) of split 'test'" in (
        message
    )
    assert str(out) in message and "min_votes=None" in message
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="nights.table"):
        assert len(filter_votes(load_nights("test", root=out), min_votes=5, unanimous=True)) == 0
    assert "min_votes=5, unanimous=True leaves none of the" in caplog.records[-1].getMessage()


def test_info_names_the_filter_that_empties_a_split(sample_copy, campaign_split, capsys):
    frame = pd.read_csv(sample_copy / "nights" / "data.csv")
    frame.loc[frame["split"] == "val", "votes"] = 3
    frame.to_csv(sample_copy / "nights" / "data.csv", index=False)
    assert main(["info", "--root", str(sample_copy), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "warning: the default vote filter votes>=6 leaves no row of val" in printed
    assert "of train" not in printed and "of test" not in printed
    out, triplets = campaign_split
    assert main(["info", "--root", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "vote filter by default: none" in printed and "warning" not in printed
    assert "votes>=6" not in printed
    assert re.search(rf"^test +{triplets} +4\.000 ", printed, re.MULTILINE)


def test_min_votes_option_takes_a_number_or_origin(sample_home, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["audit", "--root", str(sample_home), "--min-votes", "six"])
    assert stopped.value.code == 2
    assert "'six' is neither a whole number nor 'origin'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="min_votes must be a number, None or 'origin'"):
        load_nights("test", root=sample_home, min_votes="upstream")


def test_a_parquet_split_reads_like_its_folder(sample_home, tmp_path):
    strict = filter_votes(load_nights("all", root=sample_home, min_votes=None), min_votes=7)
    written = write_split(strict, tmp_path / "parquet", format="parquet", shard_rows=25)
    for split in ("train", "val", "test"):
        parquet = load_nights(split, root=written, image_size=32)
        folder = load_nights(split, root=sample_home, min_votes=7, image_size=32)
        assert parquet["id"] == folder["id"]
        assert parquet["right_vote"] == folder["right_vote"]
        assert [r.tobytes() for r in parquet["ref"]] == [r.tobytes() for r in folder["ref"]]
    assert origin_min_votes(resolve_source(written)) == 7
    again = resolve_source(written)  # written out once, keyed by content
    assert again == resolve_source(written) and again.csv_path.parent.parent.name == "splits"


def _parquet_split(folder, table: pa.Table) -> None:
    (folder / "data").mkdir(parents=True)
    (folder / "provenance.json").write_text(json.dumps({"format": "parquet", "filters": []}))
    pq.write_table(table, folder / "data" / "train-00000-of-00001.parquet")


def test_hostile_parquet_splits_get_one_line(sample_home, tmp_path):
    good = tmp_path / "good"
    write_split(load_nights("val", root=sample_home), good, format="parquet")
    shard = next((good / "data").glob("*.parquet"))
    rows = pq.read_table(shard).to_pylist()
    outside = dict(rows[0], ref_path="../../etc/passwd")
    bad = tmp_path / "outside"
    _parquet_split(bad, pa.Table.from_pylist([outside], schema=pq.read_schema(shard)))
    with pytest.raises(SchemaError, match=r"column 'ref'_path: '../../etc/passwd' must be a path"):
        load_nights("all", root=bad)
    bare = tmp_path / "bare"
    _parquet_split(bare, pa.table({"id": [1]}))
    with pytest.raises(SchemaError, match="missing column"):
        load_nights("all", root=bare)
    broken = tmp_path / "broken"
    shutil.copytree(good, broken)
    (broken / "provenance.json").write_text("{not json")
    with pytest.raises(SchemaError, match=r"provenance\.json: not JSON"):
        load_nights("all", root=broken)
    assert len(load_nights("all", root=broken, min_votes=None)) == len(rows)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.binary(max_size=400), cut=st.integers(0, 4000), provenance=st.binary(max_size=60))
def test_any_parquet_split_gives_a_table_or_our_error(
    sample_home, tmp_path_factory, data, cut, provenance
):
    folder = tmp_path_factory.mktemp("hostile")
    write_split(load_nights("val", root=sample_home), folder / "s", format="parquet")
    shard = next((folder / "s" / "data").glob("*.parquet"))
    original = shard.read_bytes()
    shard.write_bytes(original[:cut] + data + original[cut + len(data) :])
    if provenance:
        (folder / "s" / "provenance.json").write_bytes(provenance)
    try:
        table = load_nights("all", root=folder / "s", progress=False)
    except NightsError:
        return
    assert len(table) <= len(pq.read_table(io.BytesIO(original)))
