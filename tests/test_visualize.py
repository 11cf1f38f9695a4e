"""FiftyOne on a real MongoDB started by the tests on 127.0.0.1."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.database

if importlib.util.find_spec("fiftyone") is None:
    pytest.skip("fiftyone is not installed", allow_module_level=True)

from nights import load_nights  # noqa: E402
from nights.cli import main  # noqa: E402

from .conftest import ARTIFACTS, launch_chromium  # noqa: E402
from .servers import fiftyone_mongod, free_port, mongo_server  # noqa: E402


@pytest.fixture(scope="module")
def mongo():
    """A mongod of our own (temporary dbpath, loopback only), stopped at the end."""
    if not fiftyone_mongod().exists():
        pytest.skip(f"no mongod at {fiftyone_mongod()} (make test installs one)")
    home = Path(tempfile.mkdtemp(prefix="nights-fo-home-"))
    names = ("FIFTYONE_DATABASE_URI", "FIFTYONE_DATABASE_NAME", "FIFTYONE_DO_NOT_TRACK", "HOME")
    saved = {name: os.environ.get(name) for name in names}
    with mongo_server() as uri:
        os.environ.update(
            FIFTYONE_DATABASE_URI=uri,
            FIFTYONE_DATABASE_NAME="nights-tests",
            FIFTYONE_DO_NOT_TRACK="true",
            HOME=str(home),
        )
        yield uri
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def fo(mongo):
    import fiftyone

    return fiftyone


@pytest.fixture(scope="module")
def audited(sample_home, tmp_path_factory):
    """An audit of the sample's test split with PSNR and SSIM."""
    out = tmp_path_factory.mktemp("audit")
    assert (
        main(
            [
                "audit",
                "--root",
                str(sample_home),
                "--metric",
                "psnr",
                "--metric",
                "ssim",
                "--out",
                str(out),
                "--num-workers",
                "0",
                "--quiet",
                "--cache",
                str(out / "c.db"),
                "--min-votes",
                "0",
                "--split",
                "test",
            ]
        )
        == 0
    )
    return out / "audit.parquet"


def test_groups_fields_tags_and_views(fo, sample_home, audited, cache_dir):
    from fiftyone import ViewField as F

    from nights.visualize import to_fiftyone

    table = load_nights("test", root=sample_home, min_votes=None, cache_dir=cache_dir)
    dataset = to_fiftyone(table, name="t-groups", audit=audited, overwrite=True)
    assert dataset.media_type == "group" and set(dataset.group_slices) == {"ref", "left", "right"}
    assert len(dataset.select_group_slices()) == 3 * len(table)
    assert dataset.count() == len(table)  # the default slice: one sample per triplet
    audit = pd.read_parquet(audited)
    psnr = audit[audit["metric"] == "psnr"].set_index("id")
    first = dataset.select_group_slices("right").first()
    triplet = psnr.loc[first["triplet_id"]]
    assert first["psnr"]["d_left"] == pytest.approx(triplet["d_left"])
    assert first["psnr_choice"].label == triplet["model_choice"]
    assert first["human_choice"].label == triplet["human_choice"]
    row = table[table["id"].index(first["triplet_id"])]
    assert first.filepath == str(sample_home.resolve() / "nights" / row["right_path"])
    assert "ssim" in dataset.get_field_schema() and first["ssim"]["margin"] is not None
    flat = dataset.select_group_slices()
    disagree = set(flat.match_tags("disagree").values("triplet_id"))
    assert disagree == set(psnr.index[~psnr["agree"]])
    noise = set(flat.match_tags("label_noise_candidate").values("triplet_id"))
    assert noise == set(psnr.index[psnr["label_noise_candidate"]])
    low = set(flat.match_tags("low_votes").values("triplet_id"))
    assert low == set(psnr.index[psnr["votes"] < 6])
    assert {"disagreements", "label_noise_candidates", "split_test"} <= set(
        dataset.list_saved_views()
    )
    view = dataset.load_saved_view("disagreements")
    margins = [abs(m) for m in view.values("psnr.margin")]
    assert margins == sorted(margins, reverse=True) and len(view) == len(disagree)
    assert len(dataset.match(F("split") == "test")) == len(table)


def test_update_in_place_keeps_the_samples(fo, sample_home, audited, cache_dir):
    from nights.visualize import to_fiftyone

    table = load_nights("test", root=sample_home, min_votes=None, cache_dir=cache_dir)
    dataset = to_fiftyone(table, name="t-update", audit=audited, overwrite=True)
    ids = sorted(dataset.select_group_slices().values("id"))
    changed = pd.read_parquet(audited)
    changed["d_left"] = changed["d_left"] + 1.0
    changed["margin"] = changed["d_left"] - changed["d_right"]
    again = to_fiftyone(table, name="t-update", audit=changed)
    assert sorted(again.select_group_slices().values("id")) == ids  # same samples
    first = again.select_group_slices("ref").first()
    row = changed[(changed["metric"] == "psnr") & (changed["id"] == first["triplet_id"])]
    assert first["psnr"]["d_left"] == pytest.approx(float(row["d_left"].iloc[0]))


def test_embeddings_visualisation_and_similarity(fo, tmp_path, sample_home, cache_dir, monkeypatch):
    from nights.visualize import to_fiftyone

    from .dreamsim_checkpoints import write_release

    write_release(tmp_path / "weights", "dino_vitb16", seed=3)
    monkeypatch.setenv("DREAMSIM_HOME", str(tmp_path / "weights"))
    out = tmp_path / "audit"
    assert (
        main(
            [
                "audit",
                "--root",
                str(sample_home),
                "--metric",
                "dreamsim:dino_vitb16",
                "--out",
                str(out),
                "--num-workers",
                "0",
                "--quiet",
                "--cache",
                str(tmp_path / "c.db"),
                "--split",
                "val",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    table = load_nights("val", root=sample_home, cache_dir=cache_dir)
    dataset = to_fiftyone(
        table,
        name="t-embed",
        audit=out / "audit.parquet",
        embeddings="dreamsim:dino_vitb16",
        overwrite=True,
        score_cache=tmp_path / "c.db",
    )
    flat = dataset.select_group_slices()
    vectors = flat.values("dreamsim_dino_vitb16_embedding")
    assert len(vectors) == 3 * len(table) and len(vectors[0]) == 128
    assert {
        "dreamsim_dino_vitb16_pca",
        "dreamsim_dino_vitb16_tsne",
        "dreamsim_dino_vitb16_similarity",
    } <= set(dataset.list_brain_runs())
    query = flat.first().id
    nearest = flat.sort_by_similarity(query, k=3, brain_key="dreamsim_dino_vitb16_similarity")
    assert nearest.first().id == query
    with pytest.raises(ValueError, match="no embedding metric 'dreamsim:ensemble'"):
        to_fiftyone(
            table,
            name="t-embed",
            audit=out / "audit.parquet",
            embeddings="dreamsim:ensemble",
            score_cache=tmp_path / "c.db",
        )
    # The family's name finds its one audited variant, and the audit's own cache is read
    # (summary.json records it: nothing passed here, and $NIGHTS_HOME's cache has no entry).
    dataset = to_fiftyone(table, name="t-embed", audit=out / "audit.parquet", embeddings="dreamsim")
    assert len(dataset.select_group_slices().values("dreamsim_dino_vitb16_embedding")[0]) == 128


def test_importing_nights_does_not_import_fiftyone():
    code = "import sys, nights, nights.cli; print('fiftyone' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def test_export_keeps_the_release_layout(fo, sample_home, audited, tmp_path):
    out = tmp_path / "export"
    assert (
        main(
            [
                "export-fiftyone",
                str(out),
                "--root",
                str(sample_home),
                "--audit",
                str(audited),
                "--min-votes",
                "0",
                "--name",
                "t-export",
                "--quiet",
            ]
        )
        == 0
    )
    table = load_nights("test", root=sample_home, min_votes=None, cache_dir=tmp_path / "tables")
    for column in ("ref_path", "left_path", "right_path"):
        assert all((out / "data" / path).is_file() for path in table[column])
    restored = fo.Dataset.from_dir(
        str(out), dataset_type=fo.types.FiftyOneDataset, name="t-export-back"
    )
    assert len(restored.select_group_slices()) == 3 * len(table)
    assert "psnr" in restored.get_field_schema()


@pytest.mark.browser
def test_the_app_shows_triplets_with_votes_and_scores(fo, sample_home, audited, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    from nights.visualize import to_fiftyone

    table = load_nights("test", root=sample_home, min_votes=None, cache_dir=tmp_path / "t")
    dataset = to_fiftyone(table, name="t-app", audit=audited, overwrite=True)
    port = free_port()
    session = fo.launch_app(dataset, remote=True, address="127.0.0.1", port=port, auto=False)
    try:
        with playwright.sync_playwright() as driver:
            browser = launch_chromium(driver)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/", wait_until="load", timeout=120_000)
            page.wait_for_selector("[data-cy=looker]", timeout=120_000)
            assert page.locator("[data-cy=looker]").count() >= 1
            page.screenshot(path=str(ARTIFACTS / "fiftyone-grid.png"))
            sidebar = page.content()
            assert "psnr_choice" in sidebar and "votes" in sidebar
            dismiss = page.get_by_role("button", name="Dismiss")
            if dismiss.count():
                dismiss.first.click()
            page.locator("[data-cy=looker]").first.click()
            page.wait_for_timeout(3000)
            modal = page.content()
            page.screenshot(path=str(ARTIFACTS / "fiftyone-triplet.png"))
            for slice_name in ("ref", "left", "right"):
                assert slice_name in modal
            assert "human_choice" in modal
            browser.close()
    finally:
        session.close()


def test_export_pushes_through_fiftyones_hub_integration(mongo, sample_home, audited, tmp_path):
    """Against a local Hub (tests/fake_hub.py): push, then load_from_hub opens the same groups
    with the audit's fields; another user's namespace is a one-line error."""
    import json

    from .fake_hub import FakeHub, hub_env

    table = load_nights("test", root=sample_home, min_votes=None, cache_dir=tmp_path / "t")
    arguments = ["--root", str(sample_home), "--audit", str(audited), "--min-votes", "0"]
    with FakeHub(tokens={"alice-token": "alice"}) as hub:
        env = hub_env(hub, tmp_path, token="alice-token")
        command = [sys.executable, "-m", "nights.cli", "export-fiftyone", *arguments]
        pushed = subprocess.run(
            [*command, "--name", "t-push", "--push", "alice/nights-fo", "--quiet"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert pushed.returncode == 0, pushed.stderr[-3000:]
        assert "load_from_hub" in pushed.stdout
        assert "fiftyone.yml" in hub.files("dataset", "alice/nights-fo")
        code = """
import json
import fiftyone.utils.huggingface as fouh
from fiftyone import ViewField as F
dataset = fouh.load_from_hub("alice/nights-fo", name="t-pulled", overwrite=True)
flat = dataset.select_group_slices()
print(json.dumps({
    "media": dataset.media_type,
    "slices": sorted(dataset.group_slices),
    "samples": len(flat),
    "triplets": sorted(set(flat.values("triplet_id"))),
    "fields": sorted(dataset.get_field_schema()),
    "disagree": sorted(set(flat.match_tags("disagree").values("triplet_id"))),
}))
"""
        loaded = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
        )
        assert loaded.returncode == 0, loaded.stderr[-3000:]
        pulled = json.loads(loaded.stdout.strip().splitlines()[-1])
        elsewhere = subprocess.run(
            [*command, "--name", "t-push", "--push", "bob/nights-fo"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert pulled["media"] == "group" and pulled["slices"] == ["left", "ref", "right"]
    assert pulled["samples"] == 3 * len(table) and pulled["triplets"] == sorted(table["id"])
    assert {"psnr", "psnr_choice", "ssim", "human_choice", "votes"} <= set(pulled["fields"])
    audit = pd.read_parquet(audited)
    psnr = audit[audit["metric"] == "psnr"]
    assert pulled["disagree"] == sorted(psnr.loc[~psnr["agree"], "id"])
    assert elsewhere.returncode == 2
    error = elsewhere.stderr.strip().splitlines()
    assert error[-1].startswith("nights export-fiftyone: error: FiftyOne pushes into the token")
