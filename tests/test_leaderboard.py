"""The leaderboard: paired bootstrap tests between metrics, what scoring costs, its outputs."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchmetrics")

from nights.audit import run_audit  # noqa: E402
from nights.audit.leaderboard import build_leaderboard  # noqa: E402
from nights.audit.scoring import measure_scoring  # noqa: E402
from nights.audit.stats import audit_frame, paired_bootstrap  # noqa: E402
from nights.cli import main  # noqa: E402
from nights.images import open_rgb  # noqa: E402
from nights.metrics import ImageQualityMetric, pair_metric  # noqa: E402


def audit(metrics, home, tmp_path, **options):
    return run_audit(
        metrics,
        root=home,
        split="all",
        min_votes=None,
        out=tmp_path / "out",
        cache=tmp_path / "scores.db",
        num_workers=0,
        report=False,
        progress=False,
        leaderboard=True,
        **options,
    )


def test_paired_bootstrap_by_hand():
    a = np.array([1.0, 1.0, 0.0, 1.0, 0.5])
    b = np.array([0.0, 1.0, 0.0, 0.0, 0.5])
    test = paired_bootstrap(a, b, rounds=400, seed=1)
    assert test["difference"] == pytest.approx(0.4)
    low, high = test["ci95"]
    assert 0 <= low < 0.4 < high <= 1
    # The resampled mean is at most 0 when no triplet of difference 1 is drawn: 0.6^5.
    assert test["p_value"] == pytest.approx(2 * 0.6**5, abs=0.06)
    assert paired_bootstrap(a, b, rounds=400, seed=1) == test  # seeded
    flipped = paired_bootstrap(b, a, rounds=400, seed=1)
    assert flipped["difference"] == -test["difference"] and flipped["p_value"] == test["p_value"]
    with pytest.raises(ValueError, match="same triplets"):
        paired_bootstrap(a, b[:3])


def test_paired_bootstrap_in_chunks_draws_as_if_all_at_once(monkeypatch):
    rng = np.random.default_rng(4)
    a, b = rng.random(3001), rng.random(3001)
    whole = paired_bootstrap(a, b, rounds=300)
    monkeypatch.setattr("nights.audit.stats.BOOTSTRAP_DRAWS", 7 * len(a) + 5)
    assert paired_bootstrap(a, b, rounds=300) == whole


def psnr_under_another_name():
    psnr = ImageQualityMetric("psnr")
    return pair_metric(psnr.distances, name="psnr_again", cache_id="psnr_again-v1")


def test_a_metric_against_itself_does_not_differ(sample_home, tmp_path):
    board = audit(["psnr", psnr_under_another_name()], sample_home, tmp_path).leaderboard
    (pair,) = board.pairs.to_dict("records")
    assert {pair["metric_a"], pair["metric_b"]} == {"psnr", "psnr_again"}
    assert pair["difference"] == 0 and pair["ci95_low"] <= 0 <= pair["ci95_high"]
    assert pair["p_value"] == pytest.approx(1.0) and not pair["differs"]


def oracle_metric(home):
    """A metric built to agree with every vote: it knows each (reference, other) image pair of
    the sample and answers 1 - (the other image's share of the votes)."""
    frame = pd.read_csv(home / "nights" / "data.csv")
    folder = home / "nights"

    def key(pixels) -> str:
        return hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest()

    known = {}
    for row in frame.itertuples():
        ref = key(np.array(open_rgb(folder / row.ref_path)).transpose(2, 0, 1))
        for path, vote in ((row.left_path, row.left_vote), (row.right_path, row.right_vote)):
            known[ref, key(np.array(open_rgb(folder / path)).transpose(2, 0, 1))] = 1 - vote

    def distances(a, b):
        as_bytes = [(x * 255).round().to(torch.uint8).numpy() for x in (a, b)]
        return torch.tensor([known[key(x), key(y)] for x, y in zip(*as_bytes)])

    return pair_metric(distances, name="oracle", cache_id="oracle-v1")


def test_psnr_against_a_metric_that_agrees_with_every_vote_differs(sample_home, tmp_path):
    result = audit(["psnr", oracle_metric(sample_home)], sample_home, tmp_path)
    oracle = result.audit[result.audit["metric"] == "oracle"]
    votes = oracle[["left_vote", "right_vote"]].max(axis=1)
    assert oracle["two_afc"].tolist() == pytest.approx(votes.tolist())  # the best possible
    board = result.leaderboard
    assert board.metrics["metric"].tolist() == ["oracle", "psnr"]
    (pair,) = board.pairs.to_dict("records")
    assert (pair["metric_a"], pair["metric_b"]) == ("oracle", "psnr")
    assert pair["difference"] > 0 and pair["ci95_low"] > 0
    assert pair["p_value"] < 0.01 and pair["differs"]


def test_leaderboard_command_writes_its_tables_and_report_section(sample_home, tmp_path, capsys):
    out = tmp_path / "out"
    arguments = [
        *("audit", "--root", str(sample_home), "--metric", "psnr", "--metric", "ssim"),
        *("--leaderboard", "--seed", "3", "--out", str(out), "--cache", str(tmp_path / "c.db")),
        *("--num-workers", "0", "--quiet"),
    ]
    assert main(arguments) == 0
    printed = capsys.readouterr().out
    markdown = (out / "leaderboard.md").read_text()
    assert markdown.strip() in printed and "| metric | triplets | 2AFC | 95% CI |" in markdown
    assert "seed 3" in markdown
    metrics = pd.read_csv(out / "leaderboard.csv")
    summary = json.loads((out / "summary.json").read_text())
    for row in metrics.itertuples():
        entry = summary["metrics"][row.metric]
        assert row.two_afc == pytest.approx(entry["overall"]["two_afc"])
        assert [row.ci95_low, row.ci95_high] == pytest.approx(entry["overall"]["ci95"])
        assert row.two_afc_imagenet == pytest.approx(entry["by_is_imagenet"]["True"]["two_afc"])
        assert row.two_afc_not_imagenet == pytest.approx(
            entry["by_is_imagenet"]["False"]["two_afc"]
        )
        assert row.jnd_average_precision == pytest.approx(entry["jnd_average_precision"])
        loglik = entry["vote_likelihood"]["log_likelihood_per_vote"]
        assert row.log_likelihood_per_vote == pytest.approx(loglik)
        assert row.images == 4 * row.triplets and row.images_per_second > 0
        assert row.peak_memory_mb >= 0 and row.memory == "rss"
    assert metrics["two_afc"].is_monotonic_decreasing
    pairs = pd.read_csv(out / "leaderboard_pairs.csv")
    assert len(pairs) == 1 and pairs.loc[0, "metric_a"] == metrics.loc[0, "metric"]
    report = (out / "report.html").read_text()
    assert "<h2>Leaderboard</h2>" in report and "Paired bootstrap" in report

    assert main(arguments) == 0  # from the cache: the same tables, no speed to report
    again = pd.read_csv(out / "leaderboard.csv")
    assert (again["images"] == 0).all() and "| cached |" in (out / "leaderboard.md").read_text()
    pd.testing.assert_frame_equal(pairs, pd.read_csv(out / "leaderboard_pairs.csv"))
    columns = ["metric", "two_afc", "ci95_low", "ci95_high", "jnd_average_precision"]
    pd.testing.assert_frame_equal(metrics[columns], again[columns])
    arguments[arguments.index("--seed") + 1] = "4"
    assert main(arguments) == 0
    assert not pairs.equals(pd.read_csv(out / "leaderboard_pairs.csv"))  # another seed


def test_peak_memory_is_what_the_scoring_allocated(sample_home, tmp_path):
    def hungry(a, b):
        scratch = torch.ones(75_000_000)  # 300 MB, touched
        return (a - b).abs().mean(dim=(1, 2, 3)) + scratch[0] - 1

    board = audit(
        [pair_metric(hungry, name="hungry", cache_id="hungry-v1"), "psnr"], sample_home, tmp_path
    ).leaderboard
    peak = board.metrics.set_index("metric")["peak_memory_mb"]
    assert peak["hungry"] >= 290 and peak["psnr"] < 100
    with measure_scoring() as cost:
        pass
    assert cost.images == 0 and np.isnan(cost.images_per_second) and cost.seconds >= 0


def test_a_leaderboard_needs_votes(sample_home, tmp_path):
    from nights import load_nights

    table = load_nights("all", root=sample_home, min_votes=None, cache_dir=tmp_path / "t")
    scores = pd.DataFrame({"id": table["id"], "metric": "m", "d_left": 0.1, "d_right": 0.2})
    bare = audit_frame(scores, table.remove_columns(["left_vote", "right_vote", "votes"]))
    with pytest.raises(ValueError, match="needs the human votes"):
        build_leaderboard(bare, {"metrics": {"m": {"triplets": len(table)}}}, {})


@pytest.mark.gpu
def test_peak_memory_on_cuda_is_the_allocators_peak():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    with measure_scoring("cuda") as cost:
        scratch = torch.ones(50_000_000, device="cuda")  # 200 MB
        del scratch
    assert cost.memory == "cuda" and cost.peak_memory >= 200e6
