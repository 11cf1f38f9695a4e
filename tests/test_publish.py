"""Publishing NIGHTS as a Hub dataset: the folder, its card, reading it back, pushing it."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nights.hub
import nights.publish._folder as folder_module
from nights import IntegrityError, NightsError, load_jnd, load_nights
from nights.hub import HubId, parse_hub_id
from nights.publish import SplitSet, validate_hub_folder, write_hub_folder
from nights.splits import write_split
from nights.votes import filter_votes

IMAGES = {"default": ("ref", "left", "right"), "unfiltered": ("ref", "left", "right")}
IMAGES["jnd"] = ("ref", "distort")
FOLDERS = {"default": "nights", "unfiltered": "nights_unfiltered", "jnd": "nights"}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def hub_folder(sample_home, tmp_path_factory):
    """The sample written as a Hub folder (all three configs), read-only for the tests."""
    scratch = tmp_path_factory.mktemp("hub")
    with pytest.MonkeyPatch.context() as patch:  # module scope: the per-test homes are not set
        patch.setenv("NIGHTS_HOME", str(scratch / "home"))
        patch.setenv("HF_DATASETS_CACHE", str(scratch / "hf"))
        write_hub_folder(scratch / "out", root=sample_home, progress=False)
    return scratch / "out"


def source_table(sample_home, config, cache_dir):
    if config == "jnd":
        return load_jnd(sample_home, cache_dir=cache_dir)
    variant = "nights" if config == "default" else config
    return load_nights(
        "all", root=sample_home, variant=variant, min_votes=None, cache_dir=cache_dir
    )


def expected_rows(sample_home, config, cache_dir) -> dict[str, list[dict]]:
    """The source's rows per Hub split, images as the sha256 of the original files."""
    table = source_table(sample_home, config, cache_dir)
    rows: dict[str, list[dict]] = {}
    for row in table.remove_columns(list(IMAGES[config])):
        for column in IMAGES[config]:
            path = sample_home / FOLDERS[config] / row[f"{column}_path"]
            row[column] = sha(path.read_bytes())
        rows.setdefault(row.get("split") or "train", []).append(row)
    return rows


def hub_rows(split) -> list[dict]:
    """Rows as ``datasets`` gives them, images as the sha256 of their bytes."""
    images = [name for name, f in split.features.items() if type(f).__name__ == "Image"]
    for name in images:
        split = split.cast_column(name, datasets.Image(decode=False))
    return [{k: sha(v["bytes"]) if k in images else v for k, v in row.items()} for row in split]


@pytest.mark.parametrize("config", ["default", "unfiltered", "jnd"])
@pytest.mark.parametrize("streaming", [False, True])
def test_each_config_reads_back_as_the_hub_would(
    hub_folder, sample_home, cache_dir, config, streaming
):
    expected = expected_rows(sample_home, config, cache_dir)
    name = None if config == "default" else config  # the default needs no name
    loaded = datasets.load_dataset(str(hub_folder), name, streaming=streaming)
    assert sorted(loaded) == sorted(expected)
    for split, rows in expected.items():
        got = hub_rows(loaded[split])
        assert [r["id"] for r in got] == [r["id"] for r in rows]
        assert got == rows  # every column, votes included; images byte for byte


def test_layout_features_and_row_groups(hub_folder):
    files = sorted(p.relative_to(hub_folder).as_posix() for p in hub_folder.rglob("*.parquet"))
    assert "data/default/train-00000-of-00001.parquet" in files
    assert "data/jnd/train-00000-of-00001.parquet" in files
    path = hub_folder / "data/default/test-00000-of-00001.parquet"
    features = json.loads(pq.read_schema(path).metadata[b"huggingface"])["info"]["features"]
    assert features["ref"]["_type"] == "Image" and features["votes"]["dtype"] == "int64"
    metadata = pq.read_metadata(path)
    assert all(metadata.row_group(i).num_rows <= 256 for i in range(metadata.num_row_groups))
    stored = pq.read_table(path, columns=["ref", "ref_path"]).to_pylist()[0]
    assert stored["ref"]["path"] == stored["ref_path"]  # relative to the release, not absolute


def test_small_row_groups_and_shards_read_back_the_same(
    sample_home, tmp_path, cache_dir, monkeypatch
):
    monkeypatch.setattr(folder_module, "ROW_GROUP_ROWS", 8)
    expected = expected_rows(sample_home, "default", cache_dir)
    train = len(expected["train"])
    one_file = write_hub_folder(tmp_path / "a", root=sample_home, variants=["nights"])
    metadata = pq.read_metadata(tmp_path / "a/data/default/train-00000-of-00001.parquet")
    groups = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
    assert groups == [8] * (train // 8) + ([train % 8] if train % 8 else [])
    monkeypatch.setattr(folder_module, "SHARD_BYTES", 1)  # a new file after each row group
    sharded = write_hub_folder(tmp_path / "b", root=sample_home, variants=["nights"])
    shards = sorted((tmp_path / "b/data/default").glob("train-*.parquet"))
    assert len(shards) == -(-train // 8)
    assert all(s.name.endswith(f"-of-{len(shards):05d}.parquet") for s in shards)
    assert sum(pq.read_metadata(s).num_rows for s in shards) == train
    assert one_file.configs == sharded.configs
    for out in (tmp_path / "a", tmp_path / "b"):
        loaded = datasets.load_dataset(str(out))
        for split, rows in expected.items():
            assert hub_rows(loaded[split]) == rows


def test_card_parses_and_states_the_counts(hub_folder, sample_home, cache_dir):
    from huggingface_hub import DatasetCard

    card = DatasetCard.load(hub_folder / "README.md")
    assert card.data.license == "unknown"
    assert [c["config_name"] for c in card.data.configs] == ["default", "jnd", "unfiltered"]
    infos = {info["config_name"]: info for info in card.data.dataset_info}
    provenance = json.loads((hub_folder / "provenance.json").read_text())
    for config in ("default", "unfiltered", "jnd"):
        expected = expected_rows(sample_home, config, cache_dir)
        counts = {s["name"]: s["num_examples"] for s in infos[config]["splits"]}
        assert counts == {split: len(rows) for split, rows in expected.items()}
        for split, rows in expected.items():
            kept = sum(r["votes"] >= 6 for r in rows) if config != "jnd" else None
            cell = f"{kept:,}" if kept is not None else "-"
            line = rf"\| `{config}` \|[^|\n]*\| `{split}` \| {len(rows):,} \| {cell} \|"
            assert re.search(line, card.text), line
    sources = {
        "data.csv": sample_home / "nights" / "data.csv",
        "nights_raw.csv": sample_home / "nights_unfiltered" / "nights_raw.csv",
        "jnd_votes.csv": sample_home / "jnd_votes.csv",
    }
    for name, path in sources.items():
        assert f"`{name}`, sha256 `{sha(path.read_bytes())}`" in card.text
    assert 'filter(lambda v: v >= 6, input_columns="votes")' in card.text
    assert "@inproceedings{fu2023dreamsim" in card.text and "2306.09344" in card.text
    assert f"`nights` {provenance['nights_version']}" in card.text
    assert "license: unknown" in card.content and "MIT License" in card.text


def test_split_sets_become_configs_with_their_filters(sample_home, tmp_path, cache_dir):
    table = load_nights("all", root=sample_home, min_votes=None, cache_dir=cache_dir)
    strict = filter_votes(table, min_votes=8)
    write_split(strict, tmp_path / "min8", note="eight or more votes")
    dropped = table["id"][:3]
    write_split(filter_votes(table, exclude_ids=dropped), tmp_path / "pq", format="parquet")
    out = tmp_path / "hub"
    result = write_hub_folder(
        out,
        split_sets=[tmp_path / "min8", SplitSet(tmp_path / "pq", "cleaned")],
        cache_dir=cache_dir,
    )
    assert sorted(result.configs) == ["cleaned", "min8"]
    first = datasets.load_dataset(str(out))  # the first split set is the default config
    assert sorted(first) == ["test", "train", "val"]
    assert sorted(i for split in first.values() for i in split["id"]) == sorted(strict["id"])
    cleaned = datasets.load_dataset(str(out), "cleaned")
    assert sorted(i for split in cleaned.values() for i in split["id"]) == sorted(
        set(table["id"]) - set(dropped)
    )
    text = (out / "README.md").read_text()
    assert "`min_votes` = 8" in text and "eight or more votes" in text
    assert f"`exclude_ids` = {', '.join(map(str, dropped))}" in text
    assert "default: true" in text  # min8 is marked as the default config


def test_refuses_its_own_source_and_an_existing_folder(sample_copy, tmp_path, cache_dir):
    inside = sample_copy / "nights" / "hub"
    with pytest.raises(NightsError, match=r"overlaps .*nights"):
        write_hub_folder(inside, root=sample_copy, cache_dir=cache_dir)
    assert not inside.exists()
    table = load_nights("all", root=sample_copy, min_votes=None, cache_dir=cache_dir)
    split_set = write_split(filter_votes(table, min_votes=8), tmp_path / "min8")
    before = sorted(p.name for p in split_set.iterdir())
    with pytest.raises(NightsError, match="overlaps"):
        write_hub_folder(split_set, split_sets=[split_set], overwrite=True, cache_dir=cache_dir)
    assert sorted(p.name for p in split_set.iterdir()) == before
    out = tmp_path / "hub"
    out.mkdir()
    with pytest.raises(FileExistsError, match="overwrite"):
        write_hub_folder(out, root=sample_copy, cache_dir=cache_dir)


def test_interrupted_write_resumes_from_finished_shards(
    sample_home, tmp_path, cache_dir, monkeypatch
):
    monkeypatch.setattr(folder_module, "ROW_GROUP_ROWS", 8)
    monkeypatch.setattr(folder_module, "SHARD_BYTES", 1)
    real = folder_module._with_image_bytes
    calls, failures = [], []

    def failing(chunk, config):
        calls.append(chunk.num_rows)
        if len(calls) == 3 and not failures:  # once, in the train split, after two chunks
            failures.append(chunk)
            raise OSError("disk full")
        return real(chunk, config)

    monkeypatch.setattr(folder_module, "_with_image_bytes", failing)
    out = tmp_path / "hub"
    with pytest.raises(OSError, match="disk full"):
        write_hub_folder(out, root=sample_home, variants=["nights"], cache_dir=cache_dir)
    assert not out.exists()
    finished = list((tmp_path / ".hub.partial" / "data" / "default").glob("*.parquet"))
    assert finished  # whole shards survived the interruption
    read_before = sum(calls[:-1])
    calls.clear()
    write_hub_folder(out, root=sample_home, variants=["nights"], cache_dir=cache_dir)
    rows = len(load_nights("all", root=sample_home, min_votes=None, cache_dir=cache_dir))
    assert sum(calls) < rows <= sum(calls) + read_before  # finished shards were not redone
    assert not (tmp_path / ".hub.partial").exists()
    expected = expected_rows(sample_home, "default", cache_dir)
    loaded = datasets.load_dataset(str(out))
    for split, expected_split in expected.items():
        assert hub_rows(loaded[split]) == expected_split


def test_validation_lists_every_damage(hub_folder, tmp_path):
    assert validate_hub_folder(hub_folder).configs["default"]["test"] > 0
    damaged = tmp_path / "damaged"
    shutil.copytree(hub_folder, damaged)
    shard = damaged / "data/default/val-00000-of-00001.parquet"
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0xFF  # a flipped byte inside the data, the footer intact
    shard.write_bytes(bytes(data))
    (damaged / "data/jnd/train-00000-of-00001.parquet").unlink()
    card = (damaged / "README.md").read_text()
    (damaged / "README.md").write_text(card.replace("path: data/unfiltered/", "path: data/x/"))
    with pytest.raises(IntegrityError) as failure:
        validate_hub_folder(damaged)
    message = str(failure.value)
    assert "val-00000-of-00001.parquet: sha256 differs" in message
    assert "jnd/train" in message and "unfiltered/train" in message
    assert "Write it again" in message and "\n" not in message


@pytest.mark.parametrize("split", ["test", "train", "test_imagenet", "all"])
def test_load_nights_reads_a_hub_folder_as_the_release(hub_folder, sample_home, cache_dir, split):
    for min_votes in (6, None, 9):
        from_release = load_nights(
            split, root=sample_home, min_votes=min_votes, cache_dir=cache_dir
        )
        from_hub = load_nights(split, root=hub_folder, min_votes=min_votes, cache_dir=cache_dir)
        assert from_hub.column_names == from_release.column_names
        hub = from_hub.remove_columns(["ref", "left", "right"]).to_list()
        release = from_release.remove_columns(["ref", "left", "right"]).to_list()
        if split == "all":  # the Hub layout holds train, val and test in turn
            hub.sort(key=lambda row: row["id"])
            release.sort(key=lambda row: row["id"])
        assert hub == release
    hub = from_hub.cast_column("left", datasets.Image(decode=False))
    for row in hub.select(range(min(5, len(hub)))):  # the default table holds image paths
        original = (sample_home / "nights" / row["left_path"]).read_bytes()
        assert sha(Path(row["left"]["path"]).read_bytes()) == sha(original)


def test_unfiltered_and_jnd_from_a_hub_folder(hub_folder, sample_home, cache_dir):
    for load in (
        lambda root: load_nights(
            "all", root=root, variant="unfiltered", min_votes=None, cache_dir=cache_dir
        ),
        lambda root: load_jnd(root, cache_dir=cache_dir),
    ):
        release, hub = load(sample_home), load(hub_folder)
        images = [n for n, f in release.features.items() if type(f).__name__ == "Image"]
        assert hub.features == release.features
        assert hub.remove_columns(images).to_list() == release.remove_columns(images).to_list()


def test_hub_folder_is_read_once_then_cached(hub_folder, cache_dir, monkeypatch):
    load_nights("val", root=hub_folder, cache_dir=cache_dir)
    writes = []
    real = nights.hub._write_release
    monkeypatch.setattr(nights.hub, "_write_release", lambda *a: writes.append(a) or real(*a))
    again = load_nights("val", root=hub_folder, cache_dir=cache_dir)
    assert writes == [] and len(again) > 0


def test_hub_ids_parse_or_fail_clearly():
    assert parse_hub_id("hf://datasets/alice/nights") == HubId("alice/nights", None)
    assert parse_hub_id("hf://datasets/alice/nights@v1.0") == HubId("alice/nights", "v1.0")
    assert parse_hub_id("hf://datasets/a/b@refs%2Fpr%2F3").revision == "refs/pr/3"
    for bad in (
        "hf://alice/nights",
        "hf://datasets/alice",
        "hf://datasets/a/b/c",
        "hf://datasets/a/b@",
    ):
        with pytest.raises(NightsError, match="expected hf://datasets/OWNER/NAME"):
            parse_hub_id(bad)
    with pytest.raises(NightsError, match="not a Hub dataset id"):
        load_nights("test", root="hf://models/alice/nights")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_any_text_is_a_hub_id_or_a_nights_error(text):
    for candidate in (text, "hf://datasets/" + text):
        try:
            parsed = parse_hub_id(candidate)
        except NightsError:
            continue
        assert str(parse_hub_id(str(parsed))) == str(parsed)


def _tiny_hub_folder(tmp_path, rows: list[dict]):
    """A Hub folder of one config whose rows come from the test, images one tiny PNG."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 10, 10)).save(buffer, format="PNG")
    png = buffer.getvalue()
    features = datasets.Features(
        {
            "id": datasets.Value("int64"),
            **{name: datasets.Image() for name in ("ref", "left", "right")},
            "left_vote": datasets.Value("float64"),
            "right_vote": datasets.Value("float64"),
            "votes": datasets.Value("int64"),
            "split": datasets.Value("string"),
            "is_imagenet": datasets.Value("bool"),
            "prompt": datasets.Value("string"),
            **{f"{name}_path": datasets.Value("string") for name in ("ref", "left", "right")},
        }
    )
    records = [
        {
            **row,
            **{
                name: {"bytes": png, "path": row[f"{name}_path"]}
                for name in ("ref", "left", "right")
            },
        }
        for row in rows
    ]
    folder = tmp_path / "tiny"
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "data").mkdir(parents=True)
    datasets.Dataset.from_list(records, features=features).to_parquet(folder / "data" / "t.parquet")
    (folder / "README.md").write_text(
        "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: test\n"
        "    path: data/*.parquet\n---\n"
    )
    return folder


release_paths = st.sampled_from(["ref/000/001.png", "distort/000/001_0.png", "ref/001/002.png"])
paths = st.one_of(  # mostly paths of a release, so that some examples give a table
    *[release_paths] * 12,
    st.sampled_from(
        [
            *("../../etc/passwd", "/tmp/x.png", ".", "a\x00b.png", "ref/000/001.png/x"),
            *("x" * 300, "C:/x.png", "ref\\000\\001.png"),
        ]
    ),
    st.text(min_size=1, max_size=20),
)
row_values = st.fixed_dictionaries(
    {
        "id": st.integers(-5, 5),
        "left_vote": st.one_of(*[st.sampled_from([0.0, 1.0, 0.25])] * 6, st.floats()),
        "votes": st.one_of(*[st.integers(0, 11)] * 6, st.integers(-3, 12)),
        "split": st.sampled_from(["train", "val", "test", "train", "test", "other"]),
        "is_imagenet": st.booleans(),
        "prompt": st.text(max_size=10),
        "ref_path": paths,
        "left_path": paths,
        "right_path": paths,
    }
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(row_values, min_size=1, max_size=3, unique_by=lambda row: row["id"]))
def test_any_hub_folder_gives_a_table_or_a_nights_error(tmp_path, cache_dir, rows):
    for row in rows:
        row["right_vote"] = 1.0 - row["left_vote"] if row["left_vote"] == row["left_vote"] else 0.5
    folder = _tiny_hub_folder(tmp_path, rows)
    try:
        table = load_nights("all", root=folder, min_votes=None, cache_dir=cache_dir, progress=False)
    except NightsError:
        return
    assert sorted(table["id"]) == sorted(row["id"] for row in rows)
    for row in table:
        assert not row["ref_path"].startswith(("/", ".."))


# -- the Hub, played by a local server (tests/fake_hub.py); clients run in subprocesses --


@pytest.fixture(scope="module")
def hub():
    from .fake_hub import FakeHub

    with FakeHub(tokens={"alice-token": "alice", "bob-token": "bob"}) as server:
        yield server


def run_nights(hub, tmp_path, *args, token="alice-token", offline=False):
    """``nights ARGS`` as a user runs it, talking to the fake Hub only."""
    import subprocess
    import sys

    from .fake_hub import hub_env

    return subprocess.run(
        [sys.executable, "-m", "nights.cli", *map(str, args)],
        env=hub_env(hub, tmp_path, token=token, offline=offline),
        capture_output=True,
        text=True,
        timeout=300,
    )


def run_python(hub, tmp_path, code, token="alice-token", offline=False):
    """Python code in a subprocess talking to the fake Hub; its last stdout line is JSON."""
    import subprocess
    import sys

    from .fake_hub import hub_env

    result = subprocess.run(
        [sys.executable, "-c", code],
        env=hub_env(hub, tmp_path, token=token, offline=offline),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


SUMMARY = f"""
import json, sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
from nights import load_jnd, load_nights
from tests.test_publish import local_summary as summary
"""


def local_summary(table) -> dict:
    images = [c for c in ("ref", "left", "right", "distort") if c in table.column_names]
    stored = {c: table.cast_column(c, datasets.Image(decode=False))[c] for c in images}
    return {
        "rows": table.remove_columns(images).to_list(),
        "images": {c: [sha(Path(s["path"]).read_bytes()) for s in v] for c, v in stored.items()},
    }


def test_push_then_load_by_hub_id_online_and_offline(
    hub, hub_folder, sample_home, tmp_path, cache_dir
):
    result = run_nights(hub, tmp_path, "publish", hub_folder, "--push", "alice/nights")
    assert result.returncode == 0, result.stderr
    assert "exists: pushing it as it is" in result.stdout and "pushed to" in result.stdout
    remote = hub.files("dataset", "alice/nights")
    local = {
        p.relative_to(hub_folder).as_posix(): p.read_bytes()
        for p in hub_folder.rglob("*")
        if p.is_file()
    }
    assert {k: v for k, v in remote.items() if k != ".gitattributes"} == local
    code = (
        SUMMARY
        + """
root = "hf://datasets/alice/nights"
print(json.dumps({
    "test": summary(load_nights("test", root=root, progress=False)),
    "all": summary(load_nights("all", root=root, min_votes=None, progress=False)),
    "unfiltered": summary(load_nights("all", root=root, variant="unfiltered", min_votes=None)),
    "jnd": summary(load_jnd(root, progress=False)),
}, default=str))
"""
    )
    online = run_python(hub, tmp_path, code)
    expected = {
        "test": local_summary(load_nights("test", root=sample_home, cache_dir=cache_dir)),
        "unfiltered": local_summary(
            load_nights(
                "all", root=sample_home, variant="unfiltered", min_votes=None, cache_dir=cache_dir
            )
        ),
        "jnd": local_summary(load_jnd(sample_home, cache_dir=cache_dir)),
    }
    for name, summary in expected.items():
        assert online[name] == json.loads(json.dumps(summary, default=str)), name
    every = load_nights("all", root=sample_home, min_votes=None, cache_dir=cache_dir)
    assert sorted(r["id"] for r in online["all"]["rows"]) == sorted(every["id"])
    requests = len(hub.log)
    offline = run_python(hub, tmp_path, code, offline=True)
    assert offline == online and len(hub.log) == requests  # from the caches, no request


def test_revisions_and_stale_shards(hub, sample_home, tmp_path, cache_dir):
    table = load_nights("all", root=sample_home, min_votes=None, cache_dir=cache_dir)
    strict = write_split(filter_votes(table, min_votes=9), tmp_path / "min9")
    out = tmp_path / "hub-min9"
    assert run_nights(hub, tmp_path, "publish", out, "--split", strict, "--quiet").returncode == 0
    full = tmp_path / "hub-full"
    write_hub_folder(full, root=sample_home, variants=["nights"], cache_dir=cache_dir)
    assert run_nights(hub, tmp_path, "publish", full, "--push", "alice/rev").returncode == 0
    pushed = run_nights(
        hub, tmp_path, "publish", out, "--push", "alice/rev", "--revision", "strict"
    )
    assert pushed.returncode == 0, pushed.stderr
    code = """
import json
from nights import load_nights
ids = lambda root: sorted(load_nights("all", root=root, min_votes=None, progress=False)["id"])
print(json.dumps({"main": ids("hf://datasets/alice/rev"), "strict": ids("hf://datasets/alice/rev@strict")}))
"""
    loaded = run_python(hub, tmp_path, code)
    assert loaded["main"] == sorted(table["id"])
    assert loaded["strict"] == sorted(i for i, v in zip(table["id"], table["votes"]) if v >= 9)
    assert sorted(hub.files("dataset", "alice/rev", "strict")) == sorted(
        [".gitattributes", "README.md", "provenance.json"]
        + [p.relative_to(out).as_posix() for p in out.rglob("*.parquet")]
    )  # the shards of the full set are gone from that branch: the card's globs match only these


def test_push_errors_are_one_line_and_upload_nothing(hub, hub_folder, tmp_path):
    hub.add_repo("model", "alice/taken", {"config.json": b"{}"})
    damaged = tmp_path / "damaged"
    shutil.copytree(hub_folder, damaged)
    shard = damaged / "data/default/test-00000-of-00001.parquet"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    cases = [
        ((hub_folder, "--push", "alice/x"), None, "no Hugging Face token: set HF_TOKEN"),
        ((hub_folder, "--push", "alice/x"), "wrong", "(HTTP 401)"),
        ((hub_folder, "--push", "alice/taken"), "alice-token", "taken by a model repository"),
        ((hub_folder, "--push", "alice/x/y"), "alice-token", "OWNER/NAME"),
        ((hub_folder, "--push", "bob/x"), "alice-token", "(HTTP 403)"),
        ((damaged, "--push", "alice/broken"), "alice-token", "sha256 differs"),
    ]
    for args, token, message in cases:
        before = len(hub.log)
        result = run_nights(hub, tmp_path, "publish", *args, token=token)
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("nights publish: error:"), result.stderr
        assert message in lines[0], lines[0]
        uploads = [p for _, p in hub.log[before:] if "/preupload/" in p or "/commit/" in p]
        assert uploads == []
    assert ("dataset", "alice/broken") not in hub.repos and (
        "dataset",
        "alice/taken",
    ) not in hub.repos


def test_private_push_is_private(hub, hub_folder, tmp_path):
    result = run_nights(hub, tmp_path, "publish", hub_folder, "--push", "alice/secret", "--private")
    assert result.returncode == 0, result.stderr
    assert hub.repos[("dataset", "alice/secret")].private
    code = """
import json
from nights import NightsError, load_nights
try:
    load_nights("test", root="hf://datasets/alice/secret", progress=False)
    print(json.dumps("loaded"))
except NightsError as error:
    print(json.dumps(str(error)))
"""
    assert run_python(hub, tmp_path, code, token=None).startswith("hf://datasets/alice/secret")
    assert run_python(hub, tmp_path, code) == "loaded"


def test_hub_ids_that_do_not_resolve_are_one_clear_error(hub, tmp_path):
    hub.add_repo("dataset", "alice/empty", {"README.md": b"---\nlicense: mit\n---\n"})
    code = """
import json, sys
from nights import DatasetNotFoundError, load_nights
messages = []
for root in sys.argv[1:]:
    try:
        load_nights("test", root=root, progress=False)
    except DatasetNotFoundError as error:
        messages.append(str(error))
print(json.dumps(messages))
"""
    roots = [
        "hf://datasets/alice/nope",
        "hf://datasets/alice/empty@v9",
        "hf://datasets/alice/empty",
    ]
    messages = run_python(hub, tmp_path, code.replace("sys.argv[1:]", repr(roots)))
    assert len(messages) == 3 and all("\n" not in m for m in messages)
    assert (
        messages[0].startswith("hf://datasets/alice/nope: cannot load") and "exist" in messages[0]
    )
    assert "Revision 'v9'" in messages[1]
    assert messages[2].startswith("hf://datasets/alice/empty: cannot load")
