"""The synthetic sample has the release layout and votes a sensible metric can predict."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest
from PIL import Image

from nights import make_synthetic_nights, read_data_csv, read_jnd_csv, read_raw_csv
from nights.errors import OutputExistsError
from nights.schema import DATA_CSV_COLUMNS


def test_release_layout(sample_home):
    root = sample_home / "nights"
    assert (root / "data.csv").read_text().splitlines()[0] == ",".join(DATA_CSV_COLUMNS)
    frame = read_data_csv(root / "data.csv")
    assert len(frame) == 120
    for column in ("ref_path", "left_path", "right_path"):
        assert all((root / path).is_file() for path in frame[column])
    assert frame["ref_path"].str.fullmatch(r"ref/\d{3}/\d{3}\.png").all()
    assert frame["left_path"].str.fullmatch(r"distort/\d{3}/\d{3}_[01]\.png").all()
    assert frame["ref_path"].str.slice(4, 7).nunique() > 1  # several NNN folders
    numbers = sorted(int(p[8:11]) for p in frame["ref_path"] if p.startswith("ref/000/"))
    assert numbers != list(range(numbers[0], numbers[0] + len(numbers)))  # gaps
    swapped = frame["right_path"].str.endswith("_0.png")
    assert 0 < swapped.sum() < len(frame)
    assert set(frame["split"]) == {"train", "val", "test"}
    assert set(frame["is_imagenet"]) == {True, False}
    assert frame["prompt"].str.contains(",").any() and frame["prompt"].str.contains('"').any()
    assert frame["votes"].between(1, 11).all() and frame["votes"].nunique() > 5
    assert set(frame["right_vote"]) == {0.0, 1.0}  # unanimous, as in the release
    assert (frame["votes"] >= 6).mean() > 0.6
    raw_csv = (root / "data.csv").read_text()
    assert re.search(r",1\.0,0\.0,", raw_csv) and re.search(r",1,0,", raw_csv)
    with Image.open(root / frame["ref_path"][0]) as image:
        assert image.size == (48, 48) and image.mode == "RGB"


def test_unfiltered_and_jnd_files(sample_home):
    raw = read_raw_csv(sample_home / "nights_unfiltered" / "nights_raw.csv")
    assert len(raw) == 60 and "round" in raw.columns
    assert (raw["right_vote"] % 1 != 0).any()  # non-unanimous votes
    assert all((sample_home / "nights_unfiltered" / p).is_file() for p in raw["left_path"])
    jnd = read_jnd_csv(sample_home / "jnd_votes.csv")
    assert jnd["same"].between(0, 1).all() and len(jnd) == 120
    assert all((sample_home / "nights" / p).is_file() for p in jnd["distort_path"])


def _digest(folder):
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return digest.hexdigest()


def test_same_seed_same_bytes_whatever_the_number_of_processes(tmp_path):
    one = make_synthetic_nights(tmp_path / "a", n_triplets=20, image_size=16, seed=3, jobs=1)
    two = make_synthetic_nights(tmp_path / "b", n_triplets=20, image_size=16, seed=3, jobs=2)
    other = make_synthetic_nights(tmp_path / "c", n_triplets=20, image_size=16, seed=4)
    assert _digest(one) == _digest(two) != _digest(other)


def test_refuses_to_overwrite_unless_asked(tmp_path):
    out = make_synthetic_nights(tmp_path / "s", n_triplets=4, image_size=16, n_unfiltered=0)
    with pytest.raises(OutputExistsError):
        make_synthetic_nights(out, n_triplets=4, image_size=16)
    make_synthetic_nights(out, n_triplets=6, image_size=16, n_unfiltered=0, overwrite=True)
    assert len(read_data_csv(out / "nights" / "data.csv")) == 6
    assert not (out / "nights_unfiltered").exists()
    assert not list(tmp_path.glob(".*partial*"))


def _psnr_choice(root, frame):
    """1 when the right image is closer to the reference by mean squared error."""

    def load(path):
        return np.asarray(Image.open(root / path), dtype=np.float64)

    choices = []
    for row in frame.itertuples():
        ref = load(row.ref_path)
        d_left = np.mean((load(row.left_path) - ref) ** 2)
        d_right = np.mean((load(row.right_path) - ref) ** 2)
        choices.append(float(d_right < d_left))
    return np.array(choices)


def test_votes_carry_signal_a_metric_can_find(tmp_path):
    home = make_synthetic_nights(
        tmp_path / "s", n_triplets=200, image_size=32, seed=1, n_unfiltered=0
    )
    frame = read_data_csv(home / "nights" / "data.csv")
    p = frame["right_vote"].to_numpy()
    mse_agreement = np.mean(np.where(_psnr_choice(home / "nights", frame) == 1, p, 1 - p))
    random_choice = np.random.default_rng(0).integers(0, 2, len(p))
    random_agreement = np.mean(np.where(random_choice == 1, p, 1 - p))
    assert mse_agreement > 0.75
    assert 0.38 < random_agreement < 0.62


def _ensure(home, barrier, errors) -> None:
    from nights.synthetic import ensure_sample

    barrier.wait()
    try:
        ensure_sample(home)
    except Exception as error:  # reported by the test
        errors.put(repr(error))


def test_two_processes_asking_for_the_sample_at_once_build_it_once(tmp_path, monkeypatch):
    import multiprocessing

    import pandas as pd

    import nights.synthetic
    from nights.synthetic import EMBEDDED_SAMPLE

    context = multiprocessing.get_context("fork")  # the children inherit the patch below
    builds = context.Value("i", 0)
    real_make = nights.synthetic.make_synthetic_nights

    def counted(*args, **kwargs):
        with builds.get_lock():
            builds.value += 1
        return real_make(*args, **kwargs)

    monkeypatch.setattr(nights.synthetic, "make_synthetic_nights", counted)
    barrier, errors = context.Barrier(2), context.Queue()
    home = tmp_path / "sample"
    processes = [context.Process(target=_ensure, args=(home, barrier, errors)) for _ in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(300)
    assert errors.empty(), errors.get()
    assert [process.exitcode for process in processes] == [0, 0]
    assert builds.value == 1  # the second waited for the first, then found it whole
    frame = pd.read_csv(home / "nights" / "data.csv")
    assert len(frame) == EMBEDDED_SAMPLE["n_triplets"]
    assert all((home / "nights" / path).is_file() for path in frame["ref_path"])
