"""Any metric on NIGHTS: functions, metric objects, plugins and Hugging Face models, each checked
against the same distances computed directly, and the score cache they share (or do not)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
pytest.importorskip("torchmetrics")

from nights import MetricError  # noqa: E402
from nights.audit import run_audit  # noqa: E402
from nights.cli import main  # noqa: E402
from nights.images import open_rgb, resize_like_dreamsim  # noqa: E402
from nights.metrics import (  # noqa: E402
    EmbeddingMetric,
    FunctionEmbeddingMetric,
    FunctionPairMetric,
    Metric,
    embedding_metric,
    get_metric,
    pair_metric,
    parse_metric_spec,
)

REPO = Path(__file__).resolve().parents[1]
PLUGIN = Path(__file__).resolve().parent / "plugins" / "nights_metric_example"
SCALE = 2.0  # a global that a metric function below reads


def audit(metrics, home, tmp_path, cache="scores.db", **options):
    """Every triplet of the sample, no report, one process."""
    return run_audit(
        metrics,
        root=home,
        split="all",
        min_votes=None,
        out=tmp_path / "out",
        cache=tmp_path / cache,
        num_workers=0,
        report=False,
        progress=False,
        **options,
    )


@pytest.fixture(scope="module")
def triplets(sample_home):
    """Ids and (ref, left, right) PIL images of every triplet of the sample, read directly."""
    frame = pd.read_csv(sample_home / "nights" / "data.csv")
    folder = sample_home / "nights"
    images = [
        tuple(open_rgb(folder / path) for path in (row.ref_path, row.left_path, row.right_path))
        for row in frame.itertuples()
    ]
    return frame["id"].tolist(), images


def pixels(images, size):
    """``[B, 3, H, W]`` in [0, 1], resized as the audit resizes (DreamSim's bicubic)."""
    arrays = [np.array(resize_like_dreamsim(image, size) if size else image) for image in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255


def direct_distances(distance, triplets, size):
    """``distance(ref, left)`` and ``distance(ref, right)`` of every triplet, computed here."""
    _, images = triplets
    ref, left, right = (pixels([t[i] for t in images], size) for i in range(3))
    with torch.no_grad():
        return distance(ref, left).double().numpy(), distance(ref, right).double().numpy()


def cosine_distance(embed):
    return lambda a, b: 1 - torch.nn.functional.cosine_similarity(embed(a), embed(b), dim=-1)


def assert_audited(audited: pd.DataFrame, name, expected, triplets):
    """The audit's distances of metric ``name`` are ``expected`` (to 1e-6), triplet by triplet."""
    ids, _ = triplets
    part = audited[audited["metric"] == name].set_index("id").loc[ids]
    np.testing.assert_allclose(part["d_left"], expected[0], atol=1e-6, rtol=0)
    np.testing.assert_allclose(part["d_right"], expected[1], atol=1e-6, rtol=0)


def count_calls(monkeypatch, cls, method) -> list:
    """Records the batch size of every call of ``cls.method``."""
    calls, real = [], getattr(cls, method)

    def counted(self, *batches):
        calls.append(len(batches[0]))
        return real(self, *batches)

    monkeypatch.setattr(cls, method, counted)
    return calls


def mean_absolute_difference(a, b):
    return (a - b).abs().mean(dim=(1, 2, 3))


def mean_squared_difference(a, b):
    return ((a - b) ** 2).mean(dim=(1, 2, 3))


def scaled_difference(a, b):
    return SCALE * (a - b).abs().mean(dim=(1, 2, 3))


def small_network(seed: int = 0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 4, stride=4), torch.nn.ReLU(), torch.nn.Flatten()
    )


class ChannelStatistics(EmbeddingMetric):
    """A metric object as a user writes one: per-channel means and deviations at 20 px."""

    name, cache_id, input_size = "channel_statistics", "channel_statistics-v1", 20

    def embed_batch(self, images):
        return torch.cat([images.mean(dim=(2, 3)), images.std(dim=(2, 3))], dim=1)


def _statistics(images):
    return torch.cat([images.mean(dim=(2, 3)), images.std(dim=(2, 3))], dim=1)


FORMS = {
    # form: (metric, class whose calls compute, its method, the distance computed directly, size)
    "pair function": (
        lambda: pair_metric(mean_absolute_difference, name="l1", input_size=24),
        FunctionPairMetric,
        "distances",
        mean_absolute_difference,
        24,
    ),
    "embedding function": (
        lambda: embedding_metric(small_network(), name="conv", input_size=16),
        FunctionEmbeddingMetric,
        "embed_batch",
        cosine_distance(small_network()),
        16,
    ),
    "metric object": (
        ChannelStatistics,
        ChannelStatistics,
        "embed_batch",
        cosine_distance(_statistics),
        20,
    ),
}


@pytest.mark.parametrize("form", FORMS)
def test_each_form_audits_as_computed_directly_and_reuses_the_cache(
    form, sample_home, triplets, tmp_path, monkeypatch
):
    make, cls, method, distance, size = FORMS[form]
    first_metric = make()
    calls = count_calls(monkeypatch, cls, method)
    first = audit([first_metric, "psnr"], sample_home, tmp_path)
    assert calls and first_metric.input_size == size
    expected = direct_distances(distance, triplets, size)
    assert_audited(first.audit, first_metric.name, expected, triplets)
    assert first.summary["metrics"][first_metric.name]["cache_id"] == first_metric.cache_id

    calls.clear()
    again = audit([make(), "psnr"], sample_home, tmp_path)  # built anew: the same cache id
    assert calls == []
    pd.testing.assert_frame_equal(first.audit, again.audit)


def test_same_name_different_functions_do_not_share_scores(
    sample_home, triplets, tmp_path, monkeypatch
):
    l1 = pair_metric(mean_absolute_difference, name="mine", input_size=16)
    l2 = pair_metric(mean_squared_difference, name="mine", input_size=16)
    assert l1.cache_id != l2.cache_id and l1.cache_id.startswith("mine-")
    audit([l1], sample_home, tmp_path)
    second = audit([l2], sample_home, tmp_path)
    expected = direct_distances(mean_squared_difference, triplets, 16)
    assert_audited(second.audit, "mine", expected, triplets)

    # Given the same cache id, they are one metric to the cache, as documented.
    shared = [
        pair_metric(function, name="mine", input_size=16, cache_id="mine-v1")
        for function in (mean_absolute_difference, mean_squared_difference)
    ]
    first = audit([shared[0]], sample_home, tmp_path, cache="shared.db")
    calls = count_calls(monkeypatch, FunctionPairMetric, "distances")
    reused = audit([shared[1]], sample_home, tmp_path, cache="shared.db")
    assert calls == []
    pd.testing.assert_frame_equal(first.audit, reused.audit)


def test_the_derived_cache_id_follows_code_values_and_weights(monkeypatch):
    def derived(function, **options):
        return pair_metric(function, name="m", **{"input_size": 16, **options}).cache_id

    def scaled(k):
        return lambda a, b: k * (a - b).abs().mean(dim=(1, 2, 3))

    assert derived(mean_absolute_difference) == derived(mean_absolute_difference)
    assert derived(mean_absolute_difference) != derived(mean_squared_difference)  # code
    assert derived(mean_absolute_difference) != derived(mean_absolute_difference, input_size=8)
    assert derived(scaled(2)) == derived(scaled(2)) != derived(scaled(3))  # closure values
    before = derived(scaled_difference)
    monkeypatch.setattr(sys.modules[__name__], "SCALE", 3.0)
    assert derived(scaled_difference) != before  # a global it names

    def embedded(network):
        return embedding_metric(network, name="m", input_size=16).cache_id

    assert embedded(small_network(0)) == embedded(small_network(0))
    assert embedded(small_network(0)) != embedded(small_network(1))  # other weights
    network = small_network(0)
    reference = embedded(network)
    with torch.no_grad():
        network[0].bias[0] += 1e-3
    assert embedded(network) != reference  # one weight changed
    assert embedded(small_network(0).train(False)) != reference  # eval mode
    method = embedded(small_network(0).forward)  # a bound method: its function and module
    assert method == embedded(small_network(0).forward) != embedded(small_network(1).forward)


MODULE_WITH_A_METRIC = """
import torch
from nights.metrics import embedding_metric, pair_metric

OFFSET = {"a": 1.0, "b": (2, 3)}


def difference(a, b):
    return (a - b).abs().mean(dim=(1, 2, 3)) + OFFSET["a"]


torch.manual_seed(0)
network = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 4, stride=4), torch.nn.Flatten())
print(pair_metric(difference, name="d", input_size=8).cache_id,
      embedding_metric(network, name="n", input_size=8).cache_id)
"""


@pytest.mark.slow
def test_the_derived_cache_id_is_the_same_in_another_process(tmp_path):
    script = tmp_path / "my_metric.py"
    script.write_text(MODULE_WITH_A_METRIC)
    ids = {
        subprocess.run(
            [sys.executable, str(script)],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(ids) == 1 and ids.pop().startswith("d-")


def test_a_value_without_a_fingerprint_asks_for_a_cache_id():
    lock = threading.Lock()

    def guarded(a, b):
        with lock:
            return (a - b).abs().mean(dim=(1, 2, 3))

    with pytest.raises(MetricError, match=r"'guarded_l1'.*give one: cache_id=") as error:
        pair_metric(guarded, name="guarded_l1")
    assert "\n" not in str(error.value)
    assert pair_metric(guarded, name="guarded_l1", cache_id="g-v1").cache_id == "g-v1"


def test_bare_functions_bad_outputs_and_repeated_names_are_one_line_errors(sample_home, tmp_path):
    with pytest.raises(MetricError, match="mean_absolute_difference is a function: wrap it"):
        audit([mean_absolute_difference], sample_home, tmp_path)
    with pytest.raises(MetricError, match="two metrics are named 'l1'"):
        audit(
            [
                pair_metric(mean_absolute_difference, name="l1"),
                pair_metric(mean_squared_difference, name="l1"),
            ],
            sample_home,
            tmp_path,
        )
    wrong_shape = pair_metric(lambda a, b: (a - b).mean(dim=(2, 3)), name="per_channel")
    with pytest.raises(MetricError, match=r"'per_channel'.*shape \[\d+, 3\].*not \[B\]"):
        audit([wrong_shape], sample_home, tmp_path)
    not_numbers = embedding_metric(lambda x: "features", name="words", input_size=8)
    with pytest.raises(MetricError, match=r"'words'.*returned str"):
        audit([not_numbers], sample_home, tmp_path)
    for bad in (
        {"name": ""},
        {"name": "x", "input_size": 0},
        {"name": "x", "input_size": True},
        {"name": "x", "cache_id": ""},
    ):
        with pytest.raises(MetricError):
            pair_metric(mean_absolute_difference, **bad)
    with pytest.raises(MetricError, match="not a metric"):
        audit([object()], sample_home, tmp_path)


# -- the --metric spec -------------------------------------------------------------------------


def test_metric_specs_parse_into_their_parts():
    assert parse_metric_spec("psnr").family == "psnr"
    assert parse_metric_spec("dreamsim").argument == "ensemble"
    assert parse_metric_spec("dreamsim:dino_vitb16_patch").argument == "dino_vitb16_patch"
    hf = parse_metric_spec("hf:/models/my dino:mean")
    assert (hf.family, hf.argument, hf.pooling) == ("hf", "/models/my dino", "mean")
    assert parse_metric_spec("hf:org/model").pooling == "pooled"
    assert parse_metric_spec("hf:C:/models/x").argument == "C:/models/x"
    plugin = parse_metric_spec("lpips:vgg")
    assert plugin.is_plugin and plugin.argument == "vgg"
    for bad in ("", " psnr", "psnr:x", "baseline", "dreamsim:nope", "hf:", "hf::cls", ":x", "a\nb"):
        with pytest.raises(MetricError):
            parse_metric_spec(bad)


def _one_line_metric_error(error: MetricError) -> None:
    message = str(error)
    assert message and "\n" not in message and "\r" not in message


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_any_spec_string_parses_or_is_one_metric_error(text):
    try:
        spec = parse_metric_spec(text)
    except MetricError as error:
        _one_line_metric_error(error)
    else:
        assert spec.family and spec.family == text.partition(":")[0]


SPEC_STARTS = ["", "psnr", "ssim:", "dreamsim:", "baseline:", "hf:", "hf:./", "hf:org/", "x:"]


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(SPEC_STARTS), st.text(max_size=20), st.sampled_from(["", ":cls", ":z"]))
def test_any_spec_string_gives_a_metric_or_one_metric_error(start, middle, end):
    try:
        metric = get_metric(start + middle + end, device="cpu")
    except MetricError as error:
        _one_line_metric_error(error)
    else:
        assert isinstance(metric, Metric) and metric.name and metric.cache_id


# -- plugins (the nights.metrics entry points) ---------------------------------------------------


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """tests/plugins/nights_metric_example installed by pip (offline, from a copy: the build
    writes beside its sources) into a folder of its own, as site-packages would hold it."""
    work = tmp_path_factory.mktemp("plugin")
    shutil.copytree(PLUGIN, work / "source")
    site = work / "site"
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index"),
            *("--no-build-isolation", "--no-cache-dir", "--target", str(site)),
            str(work / "source"),
        ],
        check=True,
    )
    return site


@pytest.fixture
def plugin(plugin_site, monkeypatch) -> Path:
    """The example plugin installed for this test (its folder on sys.path)."""
    monkeypatch.syspath_prepend(str(plugin_site))
    return plugin_site


def cli_audit(home, tmp_path, *metrics) -> list[str]:
    """``nights audit`` on every triplet of the sample with these metrics."""
    return [
        *("audit", "--root", str(home), "--split", "all", "--min-votes", "0"),
        *(argument for metric in metrics for argument in ("--metric", metric)),
        *("--out", str(tmp_path / "out"), "--cache", str(tmp_path / "c.db")),
        *("--num-workers", "0", "--quiet"),
    ]


def test_a_plugin_metric_is_found_through_its_entry_point(
    plugin, sample_home, triplets, tmp_path, capsys
):
    metric = get_metric("example_l1")
    assert (metric.name, metric.input_size) == ("example_l1", 32)
    assert type(metric).__module__ == "nights.metrics.functions"
    assert sys.modules["nights_metric_example"].__file__.startswith(str(plugin))
    assert main(cli_audit(sample_home, tmp_path, "example_l1", "example_scaled:24")) == 0
    assert "example_l1" in capsys.readouterr().out
    audited = pd.read_parquet(tmp_path / "out" / "audit.parquet")
    expected = direct_distances(mean_absolute_difference, triplets, 32)
    assert_audited(audited, "example_l1", expected, triplets)
    expected = direct_distances(mean_absolute_difference, triplets, 24)
    assert_audited(audited, "example_scaled:24", expected, triplets)


@pytest.mark.slow
def test_a_plugin_metric_works_in_the_script_of_the_main_job(plugin_site, sample_home, tmp_path):
    script = REPO / "scripts" / "audit_agreement.py"
    done = subprocess.run(
        [sys.executable, str(script), *cli_audit(sample_home, tmp_path, "example_l1")[1:]],
        env={**os.environ, "PYTHONPATH": str(plugin_site), "NIGHTS_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "example_l1" in done.stdout
    assert pd.read_parquet(tmp_path / "out" / "audit.parquet")["metric"].unique() == ["example_l1"]


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("example_missing_attribute", "AttributeError"),
        ("example_missing_module", "No module named 'nights_metric_example_gone'"),
        ("example_not_a_metric", "gave str, not a nights metric"),
        ("example_raises", "RuntimeError: weights not found (looked in ~/.cache/example)"),
    ],
)
def test_a_broken_plugin_is_one_line_naming_it_and_its_distribution(
    plugin, sample_home, tmp_path, capsys, name, reason
):
    assert main(cli_audit(sample_home, tmp_path, name)) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("nights audit: error: ")
    assert f"'{name}'" in error and "nights-metric-example 0.1.0" in error and reason in error


def test_a_missing_plugin_is_one_line_naming_it(plugin, sample_home, tmp_path, capsys):
    assert main(cli_audit(sample_home, tmp_path, "lpips:vgg")) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "unknown metric 'lpips:vgg'" in error
    assert "example_l1" in error  # what is installed
    with pytest.raises(MetricError, match="plugin 'example_l1' takes no argument"):
        get_metric("example_l1:3")


def test_a_name_two_distributions_register_is_refused(plugin, tmp_path, monkeypatch):
    other = tmp_path / "other_site" / "other_metrics-1.0.dist-info"
    other.mkdir(parents=True)
    (other / "METADATA").write_text("Metadata-Version: 2.1\nName: other-metrics\nVersion: 1.0\n")
    (other / "entry_points.txt").write_text("[nights.metrics]\nexample_l1 = other:metric\n")
    monkeypatch.syspath_prepend(str(other.parent))
    with pytest.raises(MetricError, match="registered twice") as error:
        get_metric("example_l1")
    assert "other-metrics 1.0" in str(error.value) and "nights-metric-example" in str(error.value)


# -- Hugging Face vision models (hf:MODEL_ID_OR_FOLDER[:pooled|cls|mean]) -----------------------

IMAGENET = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}


@pytest.fixture(scope="module")
def hf_folders(tmp_path_factory) -> dict[str, Path]:
    """Tiny randomly initialised models with their image processors, as save_pretrained
    writes them: DINOv2 (crops 56 px from a 64 px shortest edge), CLIP's vision tower (32 px)
    and a whole CLIP (a text tower beside the vision one)."""
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("hf")
    vision = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}
    vision["intermediate_size"] = 64
    torch.manual_seed(0)
    models = {
        "dinov2": (
            transformers.Dinov2Model(
                transformers.Dinov2Config(**vision, image_size=56, patch_size=14)
            ),
            transformers.BitImageProcessorPil(
                size={"shortest_edge": 64}, crop_size={"height": 56, "width": 56}, **IMAGENET
            ),
        ),
        "clip_vision": (
            transformers.CLIPVisionModel(
                transformers.CLIPVisionConfig(**vision, image_size=32, patch_size=8)
            ),
            transformers.CLIPImageProcessorPil(
                size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
            ),
        ),
        "clip": (
            transformers.CLIPModel(
                transformers.CLIPConfig(
                    text_config={**vision, "vocab_size": 64, "bos_token_id": 0, "eos_token_id": 1},
                    vision_config={**vision, "image_size": 32, "patch_size": 8},
                    projection_dim=8,
                )
            ),
            transformers.CLIPImageProcessorPil(
                size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
            ),
        ),
    }
    for name, (model, processor) in models.items():
        model.save_pretrained(folder / name)
        processor.save_pretrained(folder / name)
    return {name: folder / name for name in models}


def hf_direct_distances(folder: Path, pooling: str, triplets):
    """The model's distances computed directly: its processor on PIL images at the input size
    (resize and crop off: the audit hands images over resized), its forward, the pooling."""
    from transformers import AutoImageProcessor, AutoModel

    model = AutoModel.from_pretrained(folder).eval()
    processor = AutoImageProcessor.from_pretrained(folder, backend="pil")

    def embed(images):
        resized = [resize_like_dreamsim(image, processor.crop_size["height"]) for image in images]
        pixel_values = processor(
            images=resized, do_resize=False, do_center_crop=False, return_tensors="pt"
        )["pixel_values"]
        with torch.no_grad():
            encode = getattr(model, "get_image_features", model)
            outputs = encode(pixel_values=pixel_values)
        if pooling == "pooled":
            return outputs.pooler_output
        tokens = outputs.last_hidden_state
        return tokens[:, 0] if pooling == "cls" else tokens.mean(dim=1)

    _, images = triplets
    ref, left, right = (embed([t[i] for t in images]) for i in range(3))
    cosine = torch.nn.functional.cosine_similarity
    return (1 - cosine(ref, left, dim=-1)).double(), (1 - cosine(ref, right, dim=-1)).double()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "pooling"),
    [("dinov2", ""), ("dinov2", ":cls"), ("dinov2", ":mean"), ("clip_vision", ""), ("clip", "")],
)
def test_hf_model_audits_as_its_forward_called_directly_and_reuses_the_cache(
    hf_folders, model, pooling, sample_home, triplets, tmp_path, monkeypatch
):
    from nights.metrics import HuggingFaceMetric

    spec = f"hf:{hf_folders[model]}{pooling}"
    calls = count_calls(monkeypatch, HuggingFaceMetric, "embed_batch")
    first = audit([spec], sample_home, tmp_path)
    name = f"hf:{hf_folders[model]}:{pooling.lstrip(':') or 'pooled'}"
    assert calls and first.summary["metrics"][name]["input_size"] == {"dinov2": 56}.get(model, 32)
    expected = hf_direct_distances(hf_folders[model], pooling.lstrip(":") or "pooled", triplets)
    assert_audited(first.audit, name, expected, triplets)

    calls.clear()
    again = audit([spec], sample_home, tmp_path)
    assert calls == []
    pd.testing.assert_frame_equal(first.audit, again.audit)


@pytest.mark.slow
def test_hf_normalisation_equals_the_processor_on_pil_images(hf_folders, triplets):
    from transformers import AutoImageProcessor

    _, images = triplets
    for name, folder in hf_folders.items():
        metric = get_metric(f"hf:{folder}", device="cpu")
        processor = AutoImageProcessor.from_pretrained(folder, backend="pil")
        resized = [resize_like_dreamsim(t[0], metric.input_size) for t in images[:16]]
        expected = processor(
            images=resized, do_resize=False, do_center_crop=False, return_tensors="pt"
        )["pixel_values"]
        ours = metric.pixel_values(pixels([t[0] for t in images[:16]], metric.input_size))
        torch.testing.assert_close(ours, expected, atol=1e-6, rtol=0, msg=name)


@pytest.mark.slow
def test_hf_input_size_and_cache_id_follow_the_processor_and_weights(hf_folders, tmp_path):
    from transformers import AutoImageProcessor

    dinov2 = get_metric(f"hf:{hf_folders['dinov2']}", device="cpu")
    assert dinov2.input_size == 56  # the crop, not the 64 px resize before it
    moved = tmp_path / "elsewhere" / "dinov2"
    shutil.copytree(hf_folders["dinov2"], moved)
    assert get_metric(f"hf:{moved}", device="cpu").cache_id == dinov2.cache_id
    assert get_metric(f"hf:{moved}:cls", device="cpu").cache_id != dinov2.cache_id

    processor = AutoImageProcessor.from_pretrained(moved, backend="pil")
    processor.do_center_crop, processor.size = False, {"height": 40, "width": 40}
    processor.save_pretrained(moved)  # no crop: the size is the input size
    uncropped = get_metric(f"hf:{moved}", device="cpu")
    assert uncropped.input_size == 40 and uncropped.cache_id != dinov2.cache_id

    other = tmp_path / "other"
    shutil.copytree(hf_folders["dinov2"], other)
    from transformers import AutoModel

    model = AutoModel.from_pretrained(other)
    with torch.no_grad():
        model.embeddings.cls_token += 0.01
    model.save_pretrained(other)
    assert get_metric(f"hf:{other}", device="cpu").cache_id != dinov2.cache_id


@pytest.mark.slow
def test_hf_model_id_is_read_from_the_hugging_face_cache_offline(hf_folders, tmp_path, monkeypatch):
    """The cache's layout as huggingface_hub writes it: a snapshot per commit, refs/main."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--tiny-org--dinov2"
    shutil.copytree(hf_folders["dinov2"], repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    from_cache = get_metric("hf:tiny-org/dinov2", device="cpu")
    from_folder = get_metric(f"hf:{hf_folders['dinov2']}", device="cpu")
    assert from_cache.name == "hf:tiny-org/dinov2:pooled"
    assert from_cache.cache_id == from_folder.cache_id  # the same weights: shared scores


def test_hf_model_that_cannot_be_loaded_is_one_line(tmp_path, sample_home, capsys):
    pytest.importorskip("transformers")
    with pytest.raises(MetricError, match="HF_HUB_OFFLINE is set") as error:
        get_metric("hf:nobody/no-such-model")  # offline, and not in the (empty) cache
    _one_line_metric_error(error.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MetricError, match="cannot load the model") as error:
        get_metric(f"hf:{tmp_path / 'empty'}")
    _one_line_metric_error(error.value)
    with pytest.raises(MetricError, match="neither a folder nor a Hugging Face model id"):
        get_metric("hf:not a model id")
    assert main(cli_audit(sample_home, tmp_path, "hf:nobody/no-such-model")) == 2
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.gpu
def test_hf_model_and_module_on_cuda_equal_the_cpu(hf_folders, sample_home, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    spec = f"hf:{hf_folders['dinov2']}"
    runs = {}
    for device in ("cpu", "cuda"):
        network = embedding_metric(small_network().to(device), name="conv", input_size=16)
        assert network.device.type == device  # the module's own device
        runs[device] = audit(
            [spec, network], sample_home, tmp_path / device, device=device, leaderboard=True
        )
    columns = ["id", "metric", "d_left", "d_right"]
    pd.testing.assert_frame_equal(
        runs["cpu"].audit[columns], runs["cuda"].audit[columns], atol=2e-3, rtol=0
    )
    assert set(runs["cuda"].leaderboard.metrics["memory"]) == {"cuda"}
    assert (runs["cuda"].leaderboard.metrics["peak_memory_mb"] > 0).all()
