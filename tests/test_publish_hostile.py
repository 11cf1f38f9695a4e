"""Hub-layout folders made by someone else: a card whose YAML is broken or whose data files lie
outside the folder, image columns of any type. Each gives a table or one NightsError line, and
reads nothing outside the folder."""

from __future__ import annotations

import io
import shutil

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("datasets")

from nights import load_nights  # noqa: E402
from nights.errors import NightsError  # noqa: E402

CARD = (
    "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: test\n    path: {path}\n---\n"
)


def png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 10, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


def row(identifier: int, image) -> dict:
    paths = {
        "ref_path": f"ref/000/{identifier:03d}.png",
        "left_path": f"distort/000/{identifier:03d}_0.png",
        "right_path": f"distort/000/{identifier:03d}_1.png",
    }
    return {
        "id": identifier,
        "left_vote": 1.0,
        "right_vote": 0.0,
        "votes": 4,
        "split": "test",
        "is_imagenet": False,
        "prompt": "bus",
        **paths,
        **{column: image for column in ("ref", "left", "right")},
    }


def write_folder(folder, card: str, image) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "data").mkdir(parents=True)
    pq.write_table(
        pa.Table.from_pylist([row(1, image), row(2, image)]), folder / "data" / "t.parquet"
    )
    (folder / "README.md").write_text(card)


@pytest.fixture(scope="module")
def outside(tmp_path_factory):
    """A valid shard beside the folders under test, that no card may reach."""
    folder = tmp_path_factory.mktemp("outside") / "elsewhere"
    write_folder(folder, CARD.format(path="data/*.parquet"), {"bytes": png(), "path": None})
    return folder


images = st.one_of(
    st.just({"bytes": png(), "path": None}),
    st.fixed_dictionaries(
        {
            "bytes": st.one_of(
                st.text(max_size=4), st.integers(-(2**31), 2**31), st.binary(max_size=8)
            )
        }
    ),
    st.text(max_size=4),
    st.binary(max_size=8),
    st.integers(-(2**31), 2**31),
)
data_paths = st.sampled_from(
    [
        "data/*.parquet",
        "../elsewhere/data/*.parquet",
        "data/../../elsewhere/data/*.parquet",
        "{outside}/data/*.parquet",
        "[: :",
        "'a\n  b",
    ]
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(path=data_paths, image=images)
@example(path="../elsewhere/data/*.parquet", image={"bytes": png(), "path": None})
@example(path="data/*.parquet", image={"bytes": "not bytes"})
@example(path="[: :", image={"bytes": png(), "path": None})
def test_any_card_and_image_column_give_a_table_or_one_nights_error(
    outside, tmp_path, cache_dir, monkeypatch, path, image
):
    monkeypatch.setenv("NIGHTS_HOME", str(tmp_path / "home"))
    folder = outside.parent / "folder"
    write_folder(folder, CARD.format(path=path.format(outside=outside)), image)
    reads = []
    original = pq.ParquetFile.__init__

    def recorded(self, source, *args, **kwargs):
        reads.append(str(source))
        original(self, source, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "__init__", recorded)
    try:
        table = load_nights("all", root=folder, min_votes=None, cache_dir=cache_dir, progress=False)
    except NightsError as error:
        assert "folder" in str(error)  # the folder, or the release materialized from it
    else:
        assert sorted(table["id"]) == [1, 2]
    assert not [source for source in reads if str(outside) in source or ".." in source]


# -- nights publish: its own folders only; provenance.json written by someone else -------------


@pytest.fixture(scope="module")
def published(sample_home, tmp_path_factory):
    from nights.publish import write_hub_folder

    folder = tmp_path_factory.mktemp("published") / "hub"
    write_hub_folder(folder, root=sample_home, variants=["nights"], progress=False)
    return folder


def test_overwrite_replaces_only_a_folder_that_publish_wrote(
    sample_home, published, tmp_path, capsys
):
    from nights.cli import main

    documents = tmp_path / "documents"
    documents.mkdir()
    (documents / "thesis.tex").write_text("years of work")
    command = ["publish", "--root", str(sample_home), "--variant", "nights", "--quiet"]
    assert main([*command, str(documents), "--overwrite"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "did not write" in error and str(documents) in error
    assert sorted(p.name for p in documents.iterdir()) == ["thesis.tex"]
    (documents / "thesis.tex").unlink()
    assert main([*command, str(documents), "--overwrite"]) == 0  # empty: written
    assert main([*command, str(documents), "--overwrite"]) == 0  # its own: replaced
    assert (documents / "provenance.json").is_file()


def json_values():
    return st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(-3, 10**12), st.text(max_size=12)),
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
        ),
        max_leaves=6,
    )


def json_paths(value, prefix=()):
    """Every place in a JSON document, as the keys (and indices) leading to it."""
    yield prefix
    if isinstance(value, (dict, list)):
        for key, item in value.items() if isinstance(value, dict) else enumerate(value):
            yield from json_paths(item, (*prefix, key))


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_any_damaged_provenance_is_one_integrity_error(published, tmp_path, data):
    import json

    from nights.errors import IntegrityError
    from nights.publish import validate_hub_folder

    record = json.loads((published / "provenance.json").read_text())
    place = data.draw(st.sampled_from(list(json_paths(record))[1:]))
    replacement = data.draw(
        st.one_of(json_values(), st.sampled_from(["../../../etc/passwd", "/etc/passwd", -1]))
    )
    damaged = record
    for key in place[:-1]:
        damaged = damaged[key]
    damaged[place[-1]] = replacement
    folder = tmp_path / "damaged"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(published, folder)
    (folder / "provenance.json").write_text(json.dumps(record))
    try:
        validate_hub_folder(folder, checksums=False)
    except IntegrityError as error:
        assert str(folder) in str(error)


def test_a_config_variant_that_is_a_list_is_one_integrity_error(published, tmp_path):
    """Found by the property test above: a list where the variant's name was made a TypeError."""
    import json

    from nights.errors import IntegrityError
    from nights.publish import validate_hub_folder

    folder = tmp_path / "damaged"
    shutil.copytree(published, folder)
    record = json.loads((folder / "provenance.json").read_text())
    next(iter(record["configs"].values()))["variant"] = ["nights"]
    (folder / "provenance.json").write_text(json.dumps(record))
    with pytest.raises(IntegrityError, match=r"variant \['nights'\] is not one nights writes"):
        validate_hub_folder(folder, checksums=False)


@pytest.mark.parametrize(
    "record", [b"[1, 2]", b'"text"', b"\xff\xfe\x00", b'{"format": "parquet", "source": "csv"}']
)
def test_a_split_set_whose_record_is_not_an_object_is_one_line(tmp_path, capsys, record):
    from nights.cli import main

    split_set = tmp_path / "min8"
    split_set.mkdir()
    (split_set / "provenance.json").write_bytes(record)
    assert main(["publish", str(tmp_path / "hub"), "--split", str(split_set), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("nights publish: error: ")
    assert str(split_set) in error
    assert not (tmp_path / "hub").exists()
