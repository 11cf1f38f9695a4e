"""The audit at a reduced precision or on ONNX Runtime: scored by dreamsim's own paths, and
never silent (its fidelity against fp32 in the summary, the report and the printout)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from nights.audit.fidelity import SAMPLE, fidelity_on_sets
from nights.cli import main
from nights.errors import DatasetNotFoundError
from nights.metrics import EmbeddingMetric, get_metric

from .conftest import DEMO_IMAGES

torch = pytest.importorskip("torch")


@pytest.fixture
def tiny_weights(tmp_path, monkeypatch):
    """The untuned test_tiny backbone in $DREAMSIM_HOME: ``baseline:test_tiny``."""
    from dreamsim import write_tiny_weights

    monkeypatch.setenv("DREAMSIM_HOME", str(write_tiny_weights(tmp_path / "weights")))


def _audit(sample_home, out, *options) -> int:
    return main(
        [
            *("audit", "--root", str(sample_home), "--limit", "12", "--min-votes", "0"),
            *("--metric", "baseline:test_tiny", "--metric", "psnr", "--num-workers", "0"),
            *("--out", str(out), "--quiet", *options),
        ]
    )


ORT = "onnxruntime"
CHOICES = {
    "bf16": (["--dtype", "bf16"], "bf16", "torch"),
    "int8": (["--precision", "int8"], "int8", "torch"),
    "onnxruntime": (["--backend", ORT], "fp32", ORT),
    "onnxruntime int8": (["--backend", ORT, "--precision", "int8"], "int8", ORT),
}


@pytest.mark.slow
@pytest.mark.parametrize("choice", list(CHOICES))
def test_every_choice_but_fp32_reports_its_fidelity_against_fp32(
    choice, sample_home, tmp_path, tiny_weights, capsys
):
    options, precision, backend = CHOICES[choice]
    if backend == "onnxruntime":
        pytest.importorskip("onnxruntime")
    demo = ["--fidelity-on", str(DEMO_IMAGES)] if DEMO_IMAGES.is_dir() else []
    assert _audit(sample_home, tmp_path / "exact") == 0
    assert _audit(sample_home, tmp_path / "fast", *options, *demo) == 0
    printed = capsys.readouterr().out

    exact = json.loads((tmp_path / "exact" / "summary.json").read_text())["metrics"]
    fast = json.loads((tmp_path / "fast" / "summary.json").read_text())["metrics"]
    assert exact["baseline:test_tiny"]["precision"] == "fp32" and "fidelity" not in exact
    assert "fidelity" not in exact["baseline:test_tiny"] and "fidelity" not in fast["psnr"]
    entry = fast["baseline:test_tiny"]
    assert (entry["precision"], entry["backend"]) == (precision, backend)
    assert entry["cache_id"] != exact["baseline:test_tiny"]["cache_id"]  # never an fp32 score
    sample = entry["fidelity"][SAMPLE]
    assert sample["triplets"] == 240 and sample["precision"] == precision
    assert 0 <= sample["max_abs_distance_difference"] < 0.05
    assert sample["flipped"] == round(sample["flipped_share"] * 240)
    assert sample["two_afc_candidate"] == pytest.approx(
        sample["two_afc_reference"] + sample["two_afc_change"]
    )
    expected_sets = [SAMPLE] + (["dreamsim_demo"] if demo else [])
    assert list(entry["fidelity"]) == expected_sets
    if demo:
        assert entry["fidelity"]["dreamsim_demo"]["triplets"] == 1
        assert entry["fidelity"]["dreamsim_demo"]["two_afc_change"] is None  # no votes there
    heading = f"baseline:test_tiny at {precision} on {backend}, against fp32:"
    assert heading in printed and f"  {SAMPLE}: 240 triplets, max |d - d_fp32| " in printed
    report = (tmp_path / "fast" / "report.html").read_text()
    assert f"at {precision} on {backend}: fidelity against fp32</h2>" in report


@pytest.mark.slow
def test_bf16_on_cpu_scores_with_autocast_and_int8_with_quantized_linears(tiny_weights):
    exact = get_metric("baseline:test_tiny", device="cpu")
    bf16 = get_metric("baseline:test_tiny", device="cpu", dtype=torch.bfloat16)
    int8 = get_metric("baseline:test_tiny", device="cpu", precision="int8")
    assert exact.reference is None and exact.precision == "fp32"
    assert bf16.reference.cache_id == int8.reference.cache_id == exact.cache_id
    assert bf16.model.autocast_dtype == torch.bfloat16
    assert any("quantized" in type(m).__module__ for m in int8.model.modules())
    images = torch.rand(4, 3, 224, 224)
    reference = exact.embed(images)
    for reduced in (bf16, int8):
        embedded = reduced.embed(images)
        assert embedded.dtype == torch.float32 and not torch.equal(embedded, reference)
        assert torch.allclose(embedded, reference, atol=0.05)


def test_choices_that_cannot_run_are_one_line_errors(sample_home, tmp_path, tiny_weights, capsys):
    for options in (
        ["--backend", "onnxruntime", "--precision", "bf16"],
        ["--dtype", "bf16", "--precision", "int8"],
    ):
        assert _audit(sample_home, tmp_path / "out", *options) == 2
        error = capsys.readouterr().err
        assert error.startswith("nights audit: error: ") and error.count("\n") == 1, error
    assert "help" not in error and "int8" in error


def test_fidelity_folders_in_the_demo_layout_are_checked(tmp_path, tiny_weights):
    metric = get_metric("baseline:test_tiny", device="cpu", precision="bf16")
    image = Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8))
    image.save(tmp_path / "ref_1.png")
    image.save(tmp_path / "img_a_1.png")
    with pytest.raises(DatasetNotFoundError, match=r"ref_1\.png has no img_b_1\.png beside it"):
        fidelity_on_sets(metric, [tmp_path])
    with pytest.raises(DatasetNotFoundError, match="neither a NIGHTS folder nor triplets"):
        fidelity_on_sets(metric, [tmp_path / "nothing"])


def test_an_embedding_metric_runs_where_its_model_is(tiny_weights):
    class OnMeta(EmbeddingMetric):
        name, cache_id = "on-meta", "on-meta-v1"

        def __init__(self):
            self.model = torch.nn.Linear(2, 2, device="meta")

    assert OnMeta().device == torch.device("meta")
    given = OnMeta()
    given.device = "cpu"
    assert given.device == "cpu"
    assert EmbeddingMetric().device is None


def test_dreamsim_on_onnxruntime_runs_on_the_cpu(tiny_weights):
    pytest.importorskip("onnxruntime")
    metric = get_metric("baseline:test_tiny", backend="onnxruntime")
    assert metric.device == torch.device("cpu") and metric.backend == "onnxruntime"
    assert metric.reference.backend == "torch" and metric.reference.precision == "fp32"
