"""Metrics that return what no distance can be (NaN, infinities, complex numbers, wrong shapes,
missing names), as a careless or broken plugin would: each is one MetricError naming it, and
nothing it returned reaches the score cache or the leaderboard."""

from __future__ import annotations

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
