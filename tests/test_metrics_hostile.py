"""Metrics that return what no distance can be (NaN, infinities, complex numbers, wrong shapes,
missing names), as a careless or broken plugin would: each is one MetricError naming it, and
nothing it returned reaches the score cache or the leaderboard."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

torch = pytest.importorskip("torch")
pytest.importorskip("torchmetrics")

from nights import MetricError  # noqa: E402
from nights.audit import run_audit  # noqa: E402
from nights.cli import main  # noqa: E402
from nights.metrics import EmbeddingMetric, PairMetric, pair_metric  # noqa: E402
from nights.score_cache import ScoreCache  # noqa: E402

BATCH = 4
DTYPES = st.sampled_from(["float16", "float32", "float64", "int64", "bool", "complex64"])
OUTPUTS = st.one_of(
    hnp.arrays(
        DTYPES,
        hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=BATCH + 1),
        elements={"allow_nan": True, "allow_infinity": True},
    ),
    st.lists(st.floats(), max_size=BATCH + 1),
    st.text(max_size=3),
    st.none(),
)


class Returns(PairMetric, EmbeddingMetric):
    """A metric whose distances and embeddings are whatever it is told to return."""

    name, cache_id = "returns", "returns-v1"

    def __init__(self, output):
        self.output = output

    def distances(self, a, b):
        return self.output

    def embed_batch(self, images):
        return self.output


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OUTPUTS)
def test_any_output_is_finite_distances_or_one_metric_error(output):
    metric = Returns(output)
    images = torch.zeros(BATCH, 3, 2, 2)
    for call, dims, dtype in (
        (lambda: metric.distances(images, images), 1, torch.float64),
        (lambda: metric.embed(images), 2, torch.float32),
    ):
        try:
            result = call()
        except MetricError as error:
            assert "'returns'" in str(error) and "\n" not in str(error)
            continue
        assert result.dtype == dtype and result.dim() == dims and len(result) == BATCH
        assert result.numel() and torch.isfinite(result).all()


def nan_after(rows: int):
    """Distances that turn NaN after the first ``rows`` pairs a run computes."""
    seen = []

    def distances(a, b):
        result = (a - b).abs().mean(dim=(1, 2, 3))
        result[max(rows - sum(seen), 0) :] = float("nan")
        seen.append(len(a))
        return result

    return distances


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (lambda a, b: torch.full((len(a),), float("inf")), "NaN or infinite"),
        (nan_after(40), "NaN or infinite"),
        (lambda a, b: (a - b).abs().mean(dim=(1, 2, 3)).to(torch.complex64), "complex"),
        (lambda a, b: torch.ones(len(a) + 1), r"shape \[\d+\]"),
    ],
)
def test_a_metric_returning_no_distances_is_refused_before_the_cache(
    bad, reason, sample_home, tmp_path
):
    options = {
        "root": sample_home,
        "split": "all",
        "min_votes": None,
        "out": tmp_path / "out",
        "cache": tmp_path / "c.db",
        "num_workers": 0,
        "report": False,
        "progress": False,
        "batch_size": 16,
    }
    broken = pair_metric(bad, name="broken", cache_id="l1-v1")
    with pytest.raises(MetricError, match=f"metric 'broken' returned.*{reason}"):
        run_audit([broken, "psnr"], leaderboard=True, **options)
    assert not (tmp_path / "out").exists()
    pairs = ScoreCache(tmp_path / "c.db").db.execute("SELECT distance FROM pairs").fetchall()
    assert all(np.isfinite(distance) for (distance,) in pairs)
    fixed = pair_metric(lambda a, b: (a - b).abs().mean(dim=(1, 2, 3)), name="l1", cache_id="l1-v1")
    result = run_audit([fixed, "psnr"], leaderboard=True, **options)
    assert np.isfinite(result.audit[["d_left", "d_right"]].to_numpy()).all()


def test_psnr_of_a_distortion_equal_to_its_reference_is_finite(sample_copy, tmp_path):
    first = (sample_copy / "nights" / "data.csv").read_text().splitlines()[1].split(",")
    reference, left = (sample_copy / "nights" / first[4], sample_copy / "nights" / first[5])
    left.write_bytes(reference.read_bytes())
    result = run_audit(
        ["psnr"],
        root=sample_copy,
        split="all",
        min_votes=None,
        out=tmp_path / "out",
        cache=tmp_path / "c.db",
        num_workers=0,
        report=False,
        progress=False,
    )
    row = result.audit.set_index("id").loc[int(first[0])]
    assert row["d_left"] < result.audit["d_right"].min()
    assert np.isfinite(result.audit.select_dtypes("number").to_numpy(dtype=float)).all()


@pytest.mark.parametrize(
    ("attributes", "reason"),
    [
        ({"cache_id": "x-v1"}, "needs a name"),
        ({"name": "two\nlines", "cache_id": "x-v1"}, "needs a name"),
        ({"name": "nameless_cache"}, "cache_id must be a non-empty string"),
        ({"name": "x", "cache_id": "x-v1", "input_size": -3}, "input_size"),
    ],
)
def test_a_metric_object_without_its_attributes_is_one_line(attributes, reason, tmp_path):
    metric = type("Incomplete", (PairMetric,), attributes)()
    with pytest.raises(MetricError, match=reason):
        run_audit([metric], out=tmp_path / "out", cache=tmp_path / "c.db", progress=False)


def test_a_plugin_returning_nan_is_one_cli_line(sample_home, tmp_path, monkeypatch, capsys):
    site = tmp_path / "site"
    (site / "nan_plugin-1.0.dist-info").mkdir(parents=True)
    (site / "nan_plugin-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: nan-plugin\nVersion: 1.0\n"
    )
    (site / "nan_plugin-1.0.dist-info" / "entry_points.txt").write_text(
        "[nights.metrics]\nnan_metric = nan_plugin:metric\n"
    )
    (site / "nan_plugin.py").write_text(
        "import torch\nfrom nights.metrics import pair_metric\n"
        "metric = pair_metric(lambda a, b: torch.full((len(a),), float('nan')), "
        "name='nan_metric', cache_id='nan-v1')\n"
    )
    monkeypatch.syspath_prepend(str(site))
    arguments = ["audit", "--root", str(sample_home), "--split", "all", "--min-votes", "0"]
    arguments += ["--metric", "nan_metric", "--metric", "psnr", "--leaderboard"]
    arguments += ["--out", str(tmp_path / "out"), "--cache", str(tmp_path / "c.db")]
    assert main([*arguments, "--num-workers", "0", "--quiet"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert error.startswith("nights audit: error: metric 'nan_metric' returned NaN")
    assert not (tmp_path / "out").exists()


# -- hostile Hugging Face folders ---------------------------------------------------------------

NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**70), 2**70),
    st.text(max_size=3),
    st.none(),
    st.booleans(),
)
CHANNELS = st.one_of(
    NUMBERS, st.lists(st.one_of(NUMBERS, st.lists(NUMBERS, max_size=2)), max_size=5)
)
SIDES = st.one_of(NUMBERS, st.sampled_from([1, 8, 14, 4096, 4097]))


@pytest.fixture(scope="module")
def tiny_dinov2():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.Dinov2Config(
        hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16
    )
    return transformers.Dinov2Model(config.__class__(**{**config.to_dict(), "patch_size": 4}))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rescale=NUMBERS,
    mean=CHANNELS,
    std=CHANNELS,
    side=SIDES,
    flags=st.tuples(st.booleans(), st.booleans(), st.booleans()),
)
def test_any_processor_values_give_a_usable_metric_or_one_metric_error(
    tiny_dinov2, rescale, mean, std, side, flags
):
    from types import SimpleNamespace

    from nights.metrics import HuggingFaceMetric

    do_rescale, do_normalize, do_center_crop = flags
    processor = SimpleNamespace(
        rescale_factor=rescale,
        do_rescale=do_rescale,
        image_mean=mean,
        image_std=std,
        do_normalize=do_normalize,
        do_center_crop=do_center_crop,
        crop_size={"height": side, "width": side},
        size={"shortest_edge": side},
    )
    try:
        metric = HuggingFaceMetric(tiny_dinov2, processor, name="hf:tiny:cls", pooling="cls")
    except MetricError as error:
        assert str(error).startswith("hf:tiny:cls: ") and "\n" not in str(error)
        return
    assert isinstance(metric.input_size, int) and 1 <= metric.input_size <= 4096
    if metric.input_size <= 16:
        images = torch.rand(2, 3, metric.input_size, metric.input_size)
        assert torch.isfinite(metric.pixel_values(images)).all()


def test_a_text_model_a_long_name_and_a_home_folder_are_one_line_or_found(
    hf_tiny_folder, tmp_path, monkeypatch
):
    transformers = pytest.importorskip("transformers")
    from nights.metrics import get_metric

    text_model = tmp_path / "bert"
    transformers.BertModel(
        transformers.BertConfig(
            hidden_size=8,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=16,
            vocab_size=16,
        )
    ).save_pretrained(text_model)
    shutil.copy(hf_tiny_folder / "preprocessor_config.json", text_model)
    with pytest.raises(MetricError, match="BertModel is not a vision model"):
        get_metric(f"hf:{text_model}")
    with pytest.raises(MetricError, match="neither a folder nor a Hugging Face model id"):
        get_metric("hf:" + "a" * 5000)
    monkeypatch.setenv("HOME", str(hf_tiny_folder.parent))
    assert get_metric(f"hf:~/{hf_tiny_folder.name}:cls").input_size == 16


@pytest.fixture(scope="module")
def hf_tiny_folder(tiny_dinov2, tmp_path_factory) -> Path:
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("hf") / "tiny"
    tiny_dinov2.save_pretrained(folder)
    transformers.BitImageProcessorPil(
        size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}
    ).save_pretrained(folder)
    return folder


# -- fingerprints of callable objects ----------------------------------------------------------


def scaled_by_class_attribute(scale):
    class Scaled:
        factor = scale

        def __call__(self, a, b):
            return self.factor * (a - b).abs().mean(dim=(1, 2, 3))

    return Scaled()


def scaled_by_slot(scale):
    class Slotted:
        __slots__ = ("factor",)

        def __init__(self):
            self.factor = scale

        def __repr__(self):
            return "Slotted()"

        def __call__(self, a, b):
            return self.factor * (a - b).abs().mean(dim=(1, 2, 3))

    return Slotted()


def scaled_by_base_class(scale):
    class Base:
        def __call__(self, a, b):
            return scale * (a - b).abs().mean(dim=(1, 2, 3))

    class Inherits(Base):
        pass

    return Inherits()


@pytest.mark.parametrize("make", [scaled_by_class_attribute, scaled_by_slot, scaled_by_base_class])
def test_callable_objects_that_compute_differently_do_not_share_scores(make):
    ids = {scale: pair_metric(make(scale), name="scaled").cache_id for scale in (2.0, 3.0)}
    assert ids[2.0] != ids[3.0]
    assert pair_metric(make(2.0), name="scaled").cache_id == ids[2.0]


def test_a_leaderboard_of_one_metric_says_there_is_no_pair(sample_home, tmp_path):
    result = run_audit(
        ["psnr"],
        root=sample_home,
        split="all",
        min_votes=None,
        out=tmp_path / "out",
        cache=tmp_path / "c.db",
        num_workers=0,
        progress=False,
        leaderboard=True,
    )
    report = (tmp_path / "out" / "report.html").read_text()
    assert "one metric, no pair to compare" in report and "Paired bootstrap (" not in report
    markdown = result.leaderboard.to_markdown()
    assert "| psnr |" in markdown and "one metric, no pair to compare" in markdown
    assert "| A | B |" not in markdown
    assert (tmp_path / "out" / "leaderboard.md").read_text().strip() == markdown.strip()


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        (["--limit", "0"], "limit must be a positive number of triplets, not 0"),
        (["--limit", "-1"], "limit must be a positive number of triplets, not -1"),
        (["--seed", "-1"], "seed must be a non-negative integer, not -1"),
        (["--device", "bogus"], "device 'bogus' is not a device"),
    ],
)
def test_audit_options_out_of_range_are_one_line_before_any_work(
    options, reason, sample_home, tmp_path, capsys
):
    arguments = ["audit", "--root", str(sample_home), "--split", "all", "--metric", "psnr"]
    arguments += ["--out", str(tmp_path / "out"), "--cache", str(tmp_path / "c.db"), "--quiet"]
    assert main([*arguments, *options]) == 2
    error = capsys.readouterr().err
    assert (
        error == f"nights audit: error: {reason}" + error[len(f"nights audit: error: {reason}") :]
    )
    assert error.count("\n") == 1 and not (tmp_path / "out").exists()
    result = run_audit(
        ["psnr"],
        root=sample_home,
        split="all",
        out=tmp_path / "ok",
        limit=3,
        seed=np.int64(1),
        cache=tmp_path / "c.db",
        num_workers=0,
        report=False,
        progress=False,
    )
    assert len(result.audit) == 3
