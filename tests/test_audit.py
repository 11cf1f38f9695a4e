"""Scoring and auditing: hand-checked statistics, caching, outputs, distributed runs."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
pytest.importorskip("torchmetrics")

from nights import load_nights, make_synthetic_nights  # noqa: E402
from nights.audit import audit_frame, score_table, summarize  # noqa: E402
from nights.audit.stats import (  # noqa: E402
    bootstrap_interval,
    fit_vote_likelihood,
    jnd_average_precision,
    two_afc,
)
from nights.cli import main  # noqa: E402
from nights.metrics import (  # noqa: E402
    DreamSimMetric,
    EmbeddingMetric,
    ImageQualityMetric,
    PairMetric,
    get_metric,
)
from nights.score_cache import ScoreCache  # noqa: E402

from .dreamsim_checkpoints import write_release  # noqa: E402
from .servers import free_port  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def test_two_afc_by_hand_with_soft_targets_and_ties():
    d_left = [0.1, 0.5, 0.3, 0.2, 0.4]
    d_right = [0.2, 0.4, 0.3, 0.9, 0.1]
    p_right = [0.0, 1.0, 0.7, 0.25, 0.6]
    # left closer -> 1 - p; right closer -> p; tie -> 0.5
    expected = [1.0, 1.0, 0.5, 0.75, 0.6]
    assert two_afc(d_left, d_right, p_right).tolist() == pytest.approx(expected)
    assert two_afc(d_left, d_right, p_right).mean() == pytest.approx(3.85 / 5)


def test_bootstrap_interval_brackets_the_mean():
    values = np.random.default_rng(1).random(200)
    low, high = bootstrap_interval(values, rounds=500)
    assert low < values.mean() < high and high - low < 0.2
    assert bootstrap_interval(values, rounds=500) == (low, high)  # seeded
    assert all(math.isnan(v) for v in bootstrap_interval([]))


def test_bootstrap_in_chunks_draws_as_if_all_at_once(monkeypatch):
    values = np.random.default_rng(2).random(3001)
    indices = np.random.default_rng(0).integers(0, len(values), size=(500, len(values)))
    means = values[indices].mean(axis=1)
    expected = (float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975)))
    monkeypatch.setattr("nights.audit.stats.BOOTSTRAP_DRAWS", 7 * len(values) + 5)
    assert bootstrap_interval(values, rounds=500) == expected  # 72 chunks of 7 rounds, then 3


def test_bootstrap_at_100k_triplets_needs_under_200_mb():
    code = (
        "import numpy as np, pathlib; from nights.audit.stats import bootstrap_interval\n"
        "def peak():\n"
        "    status = pathlib.Path('/proc/self/status').read_text().splitlines()\n"
        "    return next(int(l.split()[1]) for l in status if l.startswith('VmHWM:')) / 1e3\n"
        "values = np.random.default_rng(3).random(100_000)\n"
        "before = peak(); bootstrap_interval(values, rounds=1000); print(peak() - before)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert float(result.stdout) < 200  # MB; 1.5 GB with all rounds drawn at once


def test_jnd_average_precision_by_hand():
    # sorted by distance: same, different, same, different -> P at recall steps: 1, 2/3
    distances = [0.1, 0.2, 0.3, 0.4]
    same = [1, 0, 1, 0]
    assert jnd_average_precision(distances, same) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert jnd_average_precision([0.3, 0.1], [0, 1]) == pytest.approx(1.0)
    assert math.isnan(jnd_average_precision([0.1], [0]))


def test_vote_likelihood_recovers_the_slope():
    rng = np.random.default_rng(0)
    margin = rng.normal(0, 1, 4000)
    votes = rng.integers(3, 12, 4000)
    right = rng.binomial(votes, 1 / (1 + np.exp(-3.0 * margin)))
    fit = fit_vote_likelihood(margin, right / votes, votes)
    assert fit["k"] == pytest.approx(3.0, rel=0.1)
    assert fit["log_likelihood_per_vote"] > fit["chance"]
    flat = fit_vote_likelihood(rng.normal(0, 1, 4000), right / votes, votes)
    assert abs(flat["k"]) < 0.3


@pytest.fixture
def sample_table(sample_home, cache_dir):
    return load_nights("test", root=sample_home, cache_dir=cache_dir)


def test_psnr_matches_a_direct_computation(sample_table, sample_home, tmp_path):
    scores = score_table(
        sample_table, [ImageQualityMetric("psnr")], cache=ScoreCache(tmp_path / "c.db")
    )
    root = sample_home / "nights"
    for row, score in zip(sample_table.select(range(5)), scores.itertuples()):
        ref = np.asarray(Image.open(root / row["ref_path"]), dtype=np.float64) / 255
        left = np.asarray(Image.open(root / row["left_path"]), dtype=np.float64) / 255
        expected = -10 * np.log10(1 / np.mean((ref - left) ** 2))
        assert score.id == row["id"] and score.d_left == pytest.approx(expected, abs=1e-3)


def test_cache_means_a_rerun_computes_nothing(sample_table, tmp_path, monkeypatch):
    cache = ScoreCache(tmp_path / "c.db")
    first = score_table(sample_table, [ImageQualityMetric("ssim")], cache=cache)

    def no_work(*args):
        raise AssertionError("recomputed a cached distance")

    monkeypatch.setattr(ImageQualityMetric, "distances", no_work)
    again = score_table(
        sample_table, [ImageQualityMetric("ssim")], cache=ScoreCache(tmp_path / "c.db")
    )
    pd.testing.assert_frame_equal(first, again)


def _open_cache_and_write(path, barrier, index, errors) -> None:
    barrier.wait()  # every process opens the new file at the same moment
    try:
        cache = ScoreCache(path)
        cache.put_pairs("psnr-v1", [(f"a{index}", "b")], [float(index)])
        cache.close()
    except Exception as error:  # reported by the test
        errors.put(repr(error))


def test_ranks_opening_a_new_cache_together_all_succeed(tmp_path):
    """Two ranks of a torchrun audit create the cache file at once; before the set-up lock,
    SQLite's switch to WAL failed in about one round in four with "database is locked"."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    for attempt in range(20):
        path = tmp_path / str(attempt) / "scores.sqlite"
        barrier, errors = context.Barrier(6), context.Queue()
        processes = [
            context.Process(target=_open_cache_and_write, args=(path, barrier, i, errors))
            for i in range(6)
        ]
        for process in processes:
            process.start()
        for process in processes:
            process.join(60)
        assert errors.empty(), errors.get()
        assert ScoreCache(path).get_pairs(
            "psnr-v1", [(f"a{i}", "b") for i in range(6)]
        ).tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]


@pytest.fixture
def tiny_dreamsim(tmp_path):
    from dreamsim import dreamsim

    write_release(tmp_path / "weights", "dino_vitb16", seed=1)
    model, _ = dreamsim(cache_dir=tmp_path / "weights", dreamsim_type="dino_vitb16", device="cpu")
    return DreamSimMetric("dreamsim:dino_vitb16", model)


@pytest.mark.parametrize("chunk_rows", [4096, 1])  # 1: the shared reference spans two chunks
def test_each_distinct_image_is_embedded_once(tmp_path, tiny_dreamsim, monkeypatch, chunk_rows):
    monkeypatch.setattr("nights.audit.scoring.CHUNK_ROWS", chunk_rows)
    home = make_synthetic_nights(tmp_path / "s", n_triplets=6, image_size=32, n_unfiltered=0)
    csv_path = home / "nights" / "data.csv"
    frame = pd.read_csv(csv_path)
    frame.loc[1, "ref_path"] = frame.loc[0, "ref_path"]  # two triplets share a reference
    frame.to_csv(csv_path, index=False)
    table = load_nights("all", root=home, min_votes=None, cache_dir=tmp_path / "tables")
    embedded = []
    real_embed = EmbeddingMetric.embed
    monkeypatch.setattr(
        EmbeddingMetric,
        "embed",
        lambda self, images: (embedded.append(len(images)), real_embed(self, images))[1],
    )
    scores = score_table(table, [tiny_dreamsim], cache=ScoreCache(tmp_path / "c.db"), batch_size=4)
    assert sum(embedded) == 3 * 6 - 1
    with torch.no_grad():
        row = table[2]
        from dreamsim import preprocess

        expected = tiny_dreamsim.model(preprocess(row["ref"]), preprocess(row["left"])).item()
    assert scores.loc[2, "d_left"] == pytest.approx(expected, abs=1e-5)


def test_out_of_memory_halves_the_batch_and_keeps_the_results(
    sample_table, tiny_dreamsim, tmp_path, monkeypatch, caplog
):
    table = sample_table.select(range(8))
    expected = score_table(
        table, [tiny_dreamsim], cache=ScoreCache(tmp_path / "a.db"), batch_size=8
    )
    real_embed, sizes = tiny_dreamsim.model.embed, []

    def small_device(images):
        sizes.append(len(images))
        if len(images) > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_embed(images)

    monkeypatch.setattr(tiny_dreamsim.model, "embed", small_device)
    with caplog.at_level("WARNING", logger="nights.metrics"):
        scores = score_table(
            table, [tiny_dreamsim], cache=ScoreCache(tmp_path / "b.db"), batch_size=8
        )
    pd.testing.assert_frame_equal(scores, expected, atol=1e-6, rtol=0)
    assert tiny_dreamsim.max_batch == 2 and sizes[:2] == [8, 4] and max(sizes[2:]) == 2
    assert "out of device memory at 8 images per batch; going on with 4" in caplog.text
    calls = len(sizes)

    def broken(images):
        sizes.append(len(images))
        raise RuntimeError("expected all tensors to be on the same device")

    monkeypatch.setattr(tiny_dreamsim.model, "embed", broken)
    with pytest.raises(RuntimeError, match="same device"):
        tiny_dreamsim.embed(torch.zeros(2, 3, 224, 224))
    assert len(sizes) == calls + 1  # not an OOM: no retry
    tiny_dreamsim.max_batch = None

    def always_full(images):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(tiny_dreamsim.model, "embed", always_full)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        tiny_dreamsim.embed(torch.zeros(4, 3, 224, 224))
    assert tiny_dreamsim.max_batch == 1


def test_batch_size_follows_the_device(sample_table, tiny_dreamsim, tmp_path, monkeypatch):
    from types import SimpleNamespace

    from nights.metrics import batch_size_for

    assert batch_size_for("cpu") == batch_size_for(None) == 32
    sizes, real_embed = [], tiny_dreamsim.model.embed
    monkeypatch.setattr(
        tiny_dreamsim.model,
        "embed",
        lambda images: (sizes.append(len(images)), real_embed(images))[1],
    )
    score_table(
        sample_table.select(range(12)), [tiny_dreamsim], cache=ScoreCache(tmp_path / "c.db")
    )
    assert sizes == [32, 4]  # 36 distinct images at the CPU's default
    for gib, expected in ((8, 64), (24, 128), (80, 256), (141, 256)):
        card = SimpleNamespace(total_memory=gib * 2**30)
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device, c=card: c)
        assert batch_size_for("cuda:0") == expected


def test_audit_frame_choices_flags_and_no_vote_tables(sample_table, tmp_path):
    scores = pd.DataFrame(
        {
            "id": sample_table["id"],
            "metric": "m",
            "d_left": np.linspace(0, 1, len(sample_table)),
            "d_right": np.full(len(sample_table), 0.5),
        }
    )
    audit = audit_frame(scores, sample_table)
    p = np.array(sample_table["right_vote"])
    margin = scores["d_left"] - 0.5
    assert (
        audit["model_choice"] == np.where(margin > 0, "right", np.where(margin < 0, "left", "tie"))
    ).all()
    assert (audit["human_choice"] == np.where(p > 0.5, "right", "left")).all()
    assert (audit["agree"] == (audit["model_choice"] == audit["human_choice"])).all()
    flagged = audit["label_noise_candidate"]
    assert (~audit.loc[flagged, "agree"]).all()
    assert (audit.loc[flagged, "normalized_margin"] >= 1.0).all()
    assert audit["confidence"].between(0.5, 1.0).all()
    summary = summarize(audit, rounds=100)["metrics"]["m"]
    assert summary["overall"]["two_afc"] == pytest.approx(audit["two_afc"].mean())
    assert set(summary["by_split"]) == {"test"}
    unvoted = sample_table.remove_columns(["left_vote", "right_vote", "votes"])
    bare = audit_frame(scores, unvoted)
    assert "agree" not in bare and "margin" in bare
    assert "overall" not in summarize(bare)["metrics"]["m"]


def test_audit_command_writes_every_output_and_reuses_its_cache(
    sample_home, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "out"
    arguments = [
        "audit",
        "--root",
        str(sample_home),
        "--split",
        "all",
        "--metric",
        "psnr",
        "--metric",
        "ssim",
        "--out",
        str(out),
        "--num-workers",
        "0",
        "--quiet",
        "--jnd",
        "--cache",
        str(tmp_path / "c.db"),
    ]
    assert main(arguments) == 0
    printed = capsys.readouterr().out
    assert "psnr" in printed and "ssim" in printed and "JND average precision" in printed
    audit = pd.read_parquet(out / "audit.parquet")
    frame = pd.read_csv(sample_home / "nights" / "data.csv")
    kept = frame[frame["votes"] >= 6]
    assert audit[audit["metric"] == "psnr"]["id"].tolist() == kept["id"].tolist()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metrics"]["psnr"]["overall"]["two_afc"] > 0.7
    assert 0 <= summary["metrics"]["ssim"]["jnd_average_precision"] <= 1
    report = (out / "report.html").read_text()
    assert report.count("data:image/png;base64") == 3 and "data:image/jpeg;base64" in report
    assert "http://" not in report and "https://" not in report  # opens offline

    monkeypatch.setattr(ImageQualityMetric, "distances", lambda *a: pytest.fail("not cached"))
    assert main(arguments) == 0
    pd.testing.assert_frame_equal(audit, pd.read_parquet(out / "audit.parquet"))


def test_prompts_are_escaped_in_the_report(tmp_path, sample_copy):
    csv_path = sample_copy / "nights" / "data.csv"
    frame = pd.read_csv(csv_path)
    frame["prompt"] = "<script>alert(1)</script>"
    frame.to_csv(csv_path, index=False)
    out = tmp_path / "out"
    assert (
        main(
            [
                "audit",
                "--root",
                str(sample_copy),
                "--metric",
                "psnr",
                "--out",
                str(out),
                "--num-workers",
                "0",
                "--quiet",
                "--cache",
                str(tmp_path / "c.db"),
            ]
        )
        == 0
    )
    report = (out / "report.html").read_text()
    assert "<script>" not in report and "&lt;script&gt;" in report


def test_missing_weights_say_how_to_get_them(sample_home, tmp_path, capsys):
    assert (
        main(
            [
                "audit",
                "--root",
                str(sample_home),
                "--metric",
                "dreamsim",
                "--out",
                str(tmp_path / "o"),
                "--quiet",
            ]
        )
        == 2
    )
    error = capsys.readouterr().err
    assert "python -m dreamsim download ensemble" in error and "missing" in error


def test_unknown_metric_is_refused(sample_home, tmp_path, capsys):
    assert main(["audit", "--root", str(sample_home), "--metric", "lpips", "--quiet"]) == 2
    assert "unknown metric 'lpips'" in capsys.readouterr().err


def test_untuned_baseline_metric_builds_without_adapter(tmp_path):
    write_release(tmp_path, "clip_vitb32", seed=2)
    shutil.rmtree(tmp_path / "clip_vitb32_single_lora")
    metric = get_metric("baseline:clip_vitb32", device="cpu", cache_dir=str(tmp_path))
    assert metric.name == "baseline:clip_vitb32" and metric.cache_id.endswith("norm1")
    assert "-base" in metric.cache_id


def test_exclude_audit_filters_label_noise(sample_home, tmp_path):
    out = tmp_path / "audit"
    assert (
        main(
            [
                "audit",
                "--root",
                str(sample_home),
                "--split",
                "all",
                "--metric",
                "psnr",
                "--out",
                str(out),
                "--num-workers",
                "0",
                "--quiet",
                "--cache",
                str(tmp_path / "c.db"),
            ]
        )
        == 0
    )
    audit = pd.read_parquet(out / "audit.parquet")
    flagged = set(audit[~audit["agree"] & (audit["normalized_margin"] > 0.5)]["id"])
    assert flagged
    cleaned = tmp_path / "cleaned"
    assert (
        main(
            [
                "filter",
                "--root",
                str(sample_home),
                "--exclude-audit",
                str(out / "audit.parquet"),
                "--max-margin",
                "0.5",
                "--out",
                str(cleaned),
                "--quiet",
            ]
        )
        == 0
    )
    kept = set(pd.read_csv(cleaned / "data.csv")["id"])
    assert not kept & flagged
    assert len(kept) == len(pd.read_csv(sample_home / "nights" / "data.csv")) - len(flagged)


def _launcher(name: str) -> list[str]:
    """Two local processes; accelerate's ``--multi_gpu`` is its torch.distributed launcher,
    which starts CPU processes on a machine without GPUs (its ``--cpu`` would start one)."""
    bin_dir = Path(sys.executable).parent
    if name == "torchrun":
        return [str(bin_dir / "torchrun"), "--standalone", "--nproc_per_node", "2"]
    return [
        str(bin_dir / "accelerate"),
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
    ]


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
def test_two_processes_equal_one(sample_home, tmp_path, launcher):
    common = [
        "--root",
        str(sample_home),
        "--split",
        "all",
        "--min-votes",
        "0",
        "--metric",
        "psnr",
        "--metric",
        "ssim",
        "--num-workers",
        "0",
        "--quiet",
    ]
    env = {**os.environ, "NIGHTS_HOME": str(tmp_path / "home")}
    single = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "audit_agreement.py"),
            *common,
            "--out",
            str(tmp_path / "one"),
            "--cache",
            str(tmp_path / "one.db"),
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert single.returncode == 0, single.stderr
    double = subprocess.run(
        [
            *_launcher(launcher),
            str(REPO / "scripts" / "audit_agreement.py"),
            *common,
            "--out",
            str(tmp_path / "two"),
            "--cache",
            str(tmp_path / "two.db"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert double.returncode == 0, double.stderr[-3000:]
    parts = sorted((tmp_path / "two" / "parts").glob("*.parquet"))
    assert len(parts) == 2 and all(len(pd.read_parquet(p)) > 0 for p in parts)
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "one" / "audit.parquet"),
        pd.read_parquet(tmp_path / "two" / "audit.parquet"),
    )
    one = json.loads((tmp_path / "one" / "summary.json").read_text())
    two = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert one["metrics"] == two["metrics"]


class ShapeRecorder(PairMetric):
    """A pair metric that declares an input size and records the shapes it is given."""

    name, cache_id, input_size = "mse20", "mse20-v1", 20

    def __init__(self):
        self.shapes = set()

    def distances(self, a, b):
        self.shapes.add(tuple(a.shape[1:]))
        return ((a - b) ** 2).mean(dim=(1, 2, 3))


def test_run_audit_resizes_to_the_input_size_a_metric_declares(sample_home, tmp_path):
    from nights.audit import AuditResult, run_audit

    recorder = ShapeRecorder()
    result = run_audit(
        [recorder, "psnr"],
        root=sample_home,
        split="all",
        min_votes=None,
        out=tmp_path / "out",
        cache=tmp_path / "c.db",
        num_workers=0,
        report=False,
        progress=False,
    )
    assert isinstance(result, AuditResult) and result.main_process
    assert recorder.shapes == {(3, 20, 20)}  # the sample is 48 px: resized as declared
    assert result.summary["metrics"]["mse20"]["input_size"] == 20
    assert result.summary["metrics"]["psnr"]["input_size"] is None
    assert sorted(result.paths) == ["candidates", "json", "parquet"]
    assert not (tmp_path / "out" / "report.html").exists()
    written = pd.read_parquet(result.paths["parquet"])
    pd.testing.assert_frame_equal(written, result.audit)
    assert written["metric"].unique().tolist() == ["mse20", "psnr"]
    rows = len(pd.read_csv(sample_home / "nights" / "data.csv"))
    assert (written.groupby("metric").size() == rows).all()


RANK_SCRIPT = """
import json, os, sys
from nights.audit import run_audit

result = run_audit(["psnr"], root=sys.argv[1], split="all", min_votes=None, out=sys.argv[2],
                   cache=sys.argv[3], num_workers=0, report=False, progress=False)
with open(os.path.join(sys.argv[4], "rank" + os.environ["RANK"] + ".json"), "w") as f:
    json.dump({"rank": os.environ["RANK"], "main": result.main_process,
               "two_afc": result.summary["metrics"]["psnr"]["overall"]["two_afc"],
               "rows": len(result.audit)}, f)
"""


@pytest.mark.slow
def test_every_rank_of_a_launch_gets_the_merged_result(sample_home, tmp_path):
    script = tmp_path / "audit_rank.py"
    script.write_text(RANK_SCRIPT)
    launched = subprocess.run(
        [
            *_launcher("torchrun"),
            str(script),
            str(sample_home),
            str(tmp_path / "out"),
            str(tmp_path / "c.db"),
            str(tmp_path),
        ],
        env={**os.environ, "NIGHTS_HOME": str(tmp_path / "home")},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert launched.returncode == 0, launched.stderr[-3000:]
    # one file per rank: two ranks printing to one pipe can interleave their lines
    results = [json.loads(path.read_text()) for path in sorted(tmp_path.glob("rank*.json"))]
    assert [(r["rank"], r["main"]) for r in results] == [("0", True), ("1", False)]
    assert results[0]["two_afc"] == results[1]["two_afc"]
    assert (
        results[0]["rows"]
        == results[1]["rows"]
        == len(pd.read_csv(sample_home / "nights" / "data.csv"))
    )


@pytest.mark.gpu
def test_audit_on_cuda_equals_the_cpu_with_two_ranks_on_one_gpu(sample_home, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    weights = tmp_path / "dreamsim_home"
    write_release(weights, "dino_vitb16", seed=1)
    env = {**os.environ, "NIGHTS_HOME": str(tmp_path / "home"), "DREAMSIM_HOME": str(weights)}
    common = [
        *("--root", str(sample_home), "--split", "all", "--min-votes", "0"),
        *("--metric", "dreamsim:dino_vitb16", "--metric", "psnr", "--num-workers", "0", "--quiet"),
    ]
    script = str(REPO / "scripts" / "audit_agreement.py")
    on_cpu = subprocess.run(
        [sys.executable, script, *common, "--device", "cpu", "--out", str(tmp_path / "cpu")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert on_cpu.returncode == 0, on_cpu.stderr[-3000:]
    # Two processes, one GPU: each takes cuda:(LOCAL_RANK % 1) and scores its shard there.
    on_gpu = subprocess.run(
        [*_launcher("torchrun"), script, *common, "--out", str(tmp_path / "gpu")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert on_gpu.returncode == 0, on_gpu.stderr[-3000:]
    columns = ["id", "metric", "d_left", "d_right"]
    cpu = pd.read_parquet(tmp_path / "cpu" / "audit.parquet")[columns]
    gpu = pd.read_parquet(tmp_path / "gpu" / "audit.parquet")[columns]
    pd.testing.assert_frame_equal(cpu, gpu, atol=2e-3, rtol=0)  # cuDNN convolutions use TF32
    assert len(list((tmp_path / "gpu" / "parts").glob("*.parquet"))) == 2
