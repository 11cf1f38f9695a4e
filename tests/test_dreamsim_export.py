"""Reduced precision, fidelity reports, ONNX export and merged weights, on random weights in
the release layout (tests/dreamsim_checkpoints.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from dreamsim import (  # noqa: E402
    CheckpointError,
    DreamSimError,
    OnnxDreamSim,
    dreamsim,
    export,
    fidelity_report,
    load_merged,
    measure_fidelity,
    onnxruntime_model,
    triplet_distances,
    with_precision,
)
from dreamsim.__main__ import main  # noqa: E402

from .dreamsim_checkpoints import VARIANTS, write_release  # noqa: E402

ONNX_TOLERANCE = 1e-4


def images(count=3, seed=0):
    return torch.rand(count, 3, 224, 224, generator=torch.Generator().manual_seed(seed))


def load(folder, variant, **kwargs):
    model, _ = dreamsim(
        cache_dir=folder,
        dreamsim_type=variant.removesuffix("_patch"),
        use_patch_model=variant.endswith("_patch"),
        device="cpu",
        **kwargs,
    )
    return model


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
    """Each variant's release files, written once for this module."""
    root = tmp_path_factory.mktemp("releases")
    written = {}

    def folder(variant):
        if variant not in written:
            write_release(root / variant, variant, seed=len(variant))
            written[variant] = root / variant
        return written[variant]

    return folder


def closeness(candidate, exact):
    return torch.nn.functional.cosine_similarity(candidate.flatten(1), exact.flatten(1)).min()


# -- ONNX --


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_onnx_runtime_gives_our_embeddings_for_every_variant(tmp_path, releases, variant):
    pytest.importorskip("onnxruntime")
    model = load(releases(variant), variant)
    runtime = OnnxDreamSim(export(model, tmp_path / "model.onnx"))
    a, b = images(3, 1), images(3, 2)
    with torch.no_grad():
        expected_a, expected_b = model.embed(a), model.embed(b)
        expected_distance = model(a, b)
    torch.testing.assert_close(runtime.embed(a), expected_a, atol=ONNX_TOLERANCE, rtol=0)
    torch.testing.assert_close(runtime.embed(b[:1]), expected_b[:1], atol=ONNX_TOLERANCE, rtol=0)
    torch.testing.assert_close(runtime(a, b), expected_distance, atol=ONNX_TOLERANCE, rtol=0)
    assert runtime.variant.name == variant and runtime.is_patch == variant.endswith("_patch")
    assert runtime.precision == "fp32" and runtime.normalize_embeds
    assert runtime.weights_id == f"{model.weights_id}-onnxruntime"


def test_onnx_graph_keeps_raw_embeddings_and_merges_peft_layers(tmp_path, releases):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("peft")
    folder = releases("clip_vitb32")
    raw = load(folder, "clip_vitb32", normalize_embeds=False)
    unmerged = load(folder, "clip_vitb32", normalize_embeds=False, merge=False)
    assert type(unmerged).__name__ == "PeftModel"
    x = images(2, 3)
    with torch.no_grad():
        expected = raw.embed(x)
    for source, name in ((raw, "raw.onnx"), (unmerged, "peft.onnx")):
        runtime = OnnxDreamSim(export(source, tmp_path / name))
        assert not runtime.normalize_embeds
        torch.testing.assert_close(runtime.embed(x), expected, atol=ONNX_TOLERANCE, rtol=0)


def test_int8_graph_through_the_cache_stays_close_and_is_exported_once(
    tmp_path, releases, monkeypatch
):
    pytest.importorskip("onnxruntime")
    model = load(releases("dino_vitb16"), "dino_vitb16")
    runtime = onnxruntime_model(model, "int8", cache_dir=tmp_path)
    assert runtime.precision == "int8" and runtime.weights_id.endswith("-onnxruntime-int8")
    x = images(3, 4)
    with torch.no_grad():
        assert closeness(runtime.embed(x), model.embed(x)) > 0.995
    monkeypatch.setattr("dreamsim.exporter.export", lambda *a, **k: pytest.fail("exported again"))
    again = onnxruntime_model(model, "int8", cache_dir=tmp_path)
    assert again.path == runtime.path and len(list(tmp_path.iterdir())) == 1


# -- merged weights --


@pytest.mark.parametrize("variant", ["ensemble", "clip_vitb32", "dinov2_vitb14_patch"])
def test_merged_safetensors_round_trip_gives_identical_distances(tmp_path, variant):
    write_release(tmp_path / "release", variant, seed=5)
    model = load(tmp_path / "release", variant)
    path = export(model, tmp_path / "merged.safetensors", format="safetensors")
    a, b = images(2, 6), images(2, 7)
    with torch.no_grad():
        expected = model(a, b)
    for item in (tmp_path / "release").rglob("*"):  # the file alone is enough
        if item.is_file():
            item.unlink()
    through_factory = load(path, variant)
    direct = load_merged(path, device="cpu")
    with torch.no_grad():
        assert torch.equal(through_factory(a, b), expected)
        assert torch.equal(direct(a, b), expected)
    assert through_factory.weights_id == model.weights_id
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == ["merged.safetensors"]


def test_merged_file_keeps_an_mlp_head(tmp_path, releases):
    from dreamsim import MlpHead

    model = load(releases("dino_vitb16"), "dino_vitb16")
    model.mlp = MlpHead(model.features, hidden=16)
    torch.nn.init.normal_(model.mlp.fc2.weight)
    path = export(model, tmp_path / "head.safetensors", format="safetensors")
    a, b = images(2, 14), images(2, 15)
    with torch.no_grad():
        assert torch.equal(load_merged(path, device="cpu")(a, b), model(a, b))
        assert not torch.equal(load(releases("dino_vitb16"), "dino_vitb16")(a, b), model(a, b))


def test_merged_file_refuses_another_variant_and_keeps_its_options(tmp_path, releases):
    model = load(releases("dino_vitb16"), "dino_vitb16", normalize_embeds=False)
    path = export(model, tmp_path / "dino.safetensors", format="safetensors")
    assert not load_merged(path, device="cpu").normalize_embeds
    assert load_merged(path, device="cpu", normalize_embeds=True).normalize_embeds
    with pytest.raises(CheckpointError, match="holds DreamSim dino_vitb16, not clip_vitb32"):
        load(path, "clip_vitb32")
    with pytest.raises(ValueError, match="no LoRA layers to keep"):
        load(path, "dino_vitb16", merge=False)
    int8 = load_merged(path, device="cpu", precision="int8")
    assert int8.precision == "int8"


# -- precision --


def test_fp32_stays_the_default_and_exact(releases):
    folder = releases("ensemble")
    default = load(folder, "ensemble")
    named = load(folder, "ensemble", precision="fp32")
    assert default.precision == "fp32" and default.autocast_dtype is None
    assert not any("quantized" in type(m).__module__ for m in default.modules())
    assert with_precision(default, "fp32") is default
    assert not default.weights_id.endswith(("bf16", "int8"))
    x = images(2, 8)
    with torch.no_grad():
        assert torch.equal(default.embed(x), named.embed(x))


@pytest.mark.parametrize(
    ("precision", "min_cosine", "max_distance_change"),
    [("bf16", 0.9995, 0.005), ("int8", 0.995, 0.02)],
)
def test_reduced_precision_runs_on_cpu_close_to_fp32(
    releases, precision, min_cosine, max_distance_change
):
    exact = load(releases("ensemble"), "ensemble")
    reduced = with_precision(exact, precision)
    assert reduced.precision == precision and exact.precision == "fp32"
    assert reduced.weights_id == f"{exact.weights_id}-{precision}"
    a, b = images(4, 9), images(4, 10)
    with torch.no_grad():
        reference_a, reference_b, reference_d = exact.embed(a), exact.embed(b), exact(a, b)
        assert reduced.embed(a).dtype == torch.float32
        assert closeness(reduced.embed(a), reference_a) > min_cosine
        assert closeness(reduced.embed(b), reference_b) > min_cosine
        assert (reduced(a, b) - reference_d).abs().max() < max_distance_change
        assert torch.equal(exact.embed(a), reference_a)  # the fp32 model is left as it was
    if precision == "int8":
        kinds = {type(m).__module__ for m in reduced.modules()}
        assert "torch.ao.nn.quantized.dynamic.modules.linear" in kinds


def test_precision_is_chosen_by_name_or_dtype_and_errors_say_why(releases):
    folder = releases("dino_vitb16")
    assert load(folder, "dino_vitb16", dtype=torch.bfloat16).precision == "bf16"
    assert load(folder, "dino_vitb16", precision="int8").precision == "int8"
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, fp16, int8"):
        load(folder, "dino_vitb16", precision="int4")
    with pytest.raises(ValueError, match="disagree"):
        load(folder, "dino_vitb16", dtype=torch.float16, precision="bf16")
    int8 = load(folder, "dino_vitb16", precision="int8")
    with pytest.raises(DreamSimError, match="needs a DreamSim with LoRA merged"):
        with_precision(int8, "bf16")
    pytest.importorskip("peft")
    with pytest.raises(DreamSimError, match="not a PeftModel"):  # was silently fp32
        load(folder, "dino_vitb16", merge=False, dtype=torch.bfloat16)
    with pytest.raises(DreamSimError, match="export writes fp32 weights"):
        export(int8, folder / "never.safetensors", format="safetensors")


# -- fidelity --


def test_fidelity_report_on_a_case_with_known_answers():
    reference = ([0.1, 0.5, 0.3, 0.2], [0.2, 0.4, 0.3, 0.6])
    # triplet 2 flips from right to left, triplet 3 from a tie to left; 4 moves but keeps
    candidate = (torch.tensor([0.1, 0.35, 0.3, 0.25]), torch.tensor([0.2, 0.4, 0.31, 0.6]))
    report = fidelity_report(reference, candidate, p_right=[0.0, 1.0, 0.5, 0.25], precision="x")
    assert report.triplets == 4 and report.precision == "x"
    assert report.flipped == 2 and report.flipped_share == 0.5
    assert report.max_abs_distance_difference == pytest.approx(0.15)
    assert report.mean_abs_distance_difference == pytest.approx(0.21 / 8)
    assert report.two_afc_reference == pytest.approx((1 + 1 + 0.5 + 0.75) / 4)
    assert report.two_afc_candidate == pytest.approx((1 + 0 + 0.5 + 0.75) / 4)
    assert report.two_afc_change == pytest.approx(-0.25)
    assert fidelity_report(reference, candidate).to_dict()["two_afc_change"] is None
    with pytest.raises(ValueError, match="same number of triplets"):
        fidelity_report(reference, ([0.1], [0.2]))
    with pytest.raises(ValueError, match="p_right has 2 values for 4 triplets"):
        fidelity_report(reference, candidate, p_right=[0.5, 0.5])


def test_measure_fidelity_on_image_triplets(releases):
    exact = load(releases("dino_vitb16"), "dino_vitb16")
    ref, left, right = images(5, 11), images(5, 12), images(5, 13)
    same = measure_fidelity(exact, exact, ref, left, right, p_right=torch.rand(5))
    assert same.flipped == 0 and same.max_abs_distance_difference == 0
    assert same.two_afc_change == 0
    reduced = with_precision(exact, "bf16")
    report = measure_fidelity(exact, reduced, ref, left, right, batch_size=2)
    expected = fidelity_report(
        triplet_distances(exact, ref, left, right), triplet_distances(reduced, ref, left, right)
    )
    assert report.precision == "bf16"
    assert report.max_abs_distance_difference == pytest.approx(expected.max_abs_distance_difference)
    assert 0 < report.max_abs_distance_difference < 0.005


# -- bad input --


def test_unknown_format_and_unwritable_path_are_one_line_errors(tmp_path, releases):
    model = load(releases("clip_vitb32"), "clip_vitb32")
    with pytest.raises(ValueError, match="format must be one of onnx, safetensors, not 'tflite'"):
        export(model, tmp_path / "m.tflite", format="tflite")
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(DreamSimError) as error:
        export(model, blocker / "m.safetensors", format="safetensors")
    assert str(blocker / "m.safetensors") in str(error.value) and "\n" not in str(error.value)


def test_missing_onnxruntime_says_how_to_install_and_keeps_an_existing_file(
    tmp_path, releases, monkeypatch
):
    model = load(releases("clip_vitb32"), "clip_vitb32")
    existing = tmp_path / "model.onnx"
    existing.write_bytes(b"an earlier export")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(DreamSimError, match=r"needs onnxruntime.*pip install 'nights\[onnx\]'"):
        OnnxDreamSim(existing)
    with pytest.raises(DreamSimError, match=r"ONNX export needs onnxscript"):
        export(model, existing)
    assert existing.read_bytes() == b"an earlier export"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_files_that_are_not_ours_are_named_in_the_error(tmp_path, releases):
    pytest.importorskip("onnxruntime")
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(CheckpointError, match="not a merged DreamSim file"):
        load_merged(plain)
    with pytest.raises(CheckpointError, match="no such file"):
        load_merged(tmp_path / "absent.safetensors")
    from onnx import TensorProto, helper, save_model

    identity = tmp_path / "identity.onnx"
    tensor = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [tensor],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), identity)
    with pytest.raises(CheckpointError, match="not a DreamSim graph"):
        OnnxDreamSim(identity)
    runtime = OnnxDreamSim(
        export(load(releases("clip_vitb32"), "clip_vitb32"), tmp_path / "m.onnx")
    )
    with pytest.raises(
        ValueError, match=r"images must be \[B, 3, 224, 224\], not \[2, 3, 64, 64\]"
    ):
        runtime.embed(torch.rand(2, 3, 64, 64))


@pytest.fixture(scope="module")
def merged_bytes(releases, tmp_path_factory):
    path = tmp_path_factory.mktemp("merged") / "m.safetensors"
    export(load(releases("clip_vitb32"), "clip_vitb32"), path, format="safetensors")
    return path.read_bytes()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cut=st.integers(min_value=0), flips=st.lists(st.integers(min_value=0), max_size=4))
def test_a_damaged_merged_file_loads_or_raises_checkpoint_error(tmp_path, merged_bytes, cut, flips):
    data = bytearray(merged_bytes[: len(merged_bytes) - cut % len(merged_bytes)])
    for position in flips:
        if data:
            data[position % len(data)] ^= 0xFF
    path = tmp_path / "damaged.safetensors"
    path.write_bytes(bytes(data))
    try:
        load_merged(path, device="cpu")
    except CheckpointError as error:
        assert "\n" not in str(error)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=2000))
def test_any_bytes_as_an_onnx_graph_raise_checkpoint_error(tmp_path, data):
    pytest.importorskip("onnxruntime")
    path = tmp_path / "any.onnx"
    path.write_bytes(data)
    with pytest.raises(CheckpointError):
        OnnxDreamSim(path)


# -- command line --


def test_export_command_writes_a_graph_and_fails_in_one_line(tmp_path, releases, capsys):
    pytest.importorskip("onnxruntime")
    folder = releases("open_clip_vitb32")
    out = tmp_path / "out" / "model.safetensors"
    args = ["export", "open_clip_vitb32", str(out), "--format", "safetensors"]
    assert main([*args, "--cache-dir", str(folder)]) == 0
    assert "written to" in capsys.readouterr().out
    assert load_merged(out).variant.name == "open_clip_vitb32"
    assert main([*args, "--cache-dir", str(tmp_path / "empty")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("python -m dreamsim export: error: DreamSim open_clip_vitb32: missing")
    assert error.count("\n") == 1
    with pytest.raises(SystemExit) as exit_code:
        main([*args, "--precision", "int8"])
    assert exit_code.value.code == 2


def test_importing_dreamsim_loads_no_onnx_library():
    code = (
        "import sys, dreamsim; print([m for m in ('onnx', 'onnxruntime', 'onnxscript', "
        "'safetensors') if m in sys.modules])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


@pytest.mark.gpu
def test_cuda_runs_bf16_refuses_int8_and_exports_from_the_gpu(tmp_path, releases):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    pytest.importorskip("onnxruntime")
    folder = releases("ensemble")
    cpu = load(folder, "ensemble")
    mixed, _ = dreamsim(cache_dir=folder, device="cuda", precision="bf16")
    x = images(4, 20)
    with torch.no_grad():
        expected = cpu.embed(x)
        assert closeness(mixed.embed(x.cuda()).cpu(), expected) > 0.999
    with pytest.raises(DreamSimError, match="int8 runs on CPU only"):
        dreamsim(cache_dir=folder, device="cuda", precision="int8")
    runtime = OnnxDreamSim(export(with_precision(mixed, "fp32"), tmp_path / "from_gpu.onnx"))
    torch.testing.assert_close(runtime.embed(x), expected, atol=ONNX_TOLERANCE, rtol=0)


def test_a_merged_file_with_a_misshapen_head_names_the_file(tmp_path, releases):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    model = load(releases("dino_vitb16"), "dino_vitb16")
    path = export(model, tmp_path / "m.safetensors", format="safetensors")
    with safe_open(str(path), framework="pt") as opened:
        metadata = opened.metadata()
    tensors = {**load_file(str(path)), "mlp.fc1.weight": torch.zeros(4, 4, 4)}
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(CheckpointError, match=r"m.safetensors: tensors do not fit DreamSim"):
        load_merged(path, device="cpu")
