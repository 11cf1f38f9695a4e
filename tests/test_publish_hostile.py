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
