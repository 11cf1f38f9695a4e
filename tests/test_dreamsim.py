"""Our DreamSim against the spec: official-layout checkpoints, offline, every variant."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from PIL import Image  # noqa: E402

from dreamsim import CheckpointError, dreamsim, embed_images, preprocess  # noqa: E402
from dreamsim.weights import MANIFEST  # noqa: E402

from .conftest import DEMO_IMAGES  # noqa: E402
from .dreamsim_checkpoints import (  # noqa: E402
    VARIANTS,
    reference_distance,
    reference_embedding,
    write_release,
)

REAL_WEIGHTS = Path(os.environ.get("DREAMSIM_HOME") or Path.home() / ".cache" / "dreamsim")


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def images(count=3, seed=0):
    return torch.rand(count, 3, 224, 224, generator=torch.Generator().manual_seed(seed))


def load(folder, variant, **kwargs):
    patch = variant.endswith("_patch")
    name = variant.removesuffix("_patch")
    model, _ = dreamsim(
        cache_dir=folder, dreamsim_type=name, use_patch_model=patch, device="cpu", **kwargs
    )
    return model


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("normalize", [True, False])
def test_every_variant_matches_the_reference(tmp_path, variant, normalize, no_network):
    weights = write_release(tmp_path, variant, seed=len(variant))
    model = load(tmp_path, variant, normalize_embeds=normalize)
    a, b = images(2, 1), images(2, 2)
    with torch.no_grad():
        ours_a, ours_b = model.embed(a), model.embed(b)
        distance = model(a, b)
    expected_a = reference_embedding(weights, variant, a, normalize, lora=True)
    expected_b = reference_embedding(weights, variant, b, normalize, lora=True)
    torch.testing.assert_close(ours_a, expected_a, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours_b, expected_b, atol=1e-5, rtol=1e-5)
    patch = variant.endswith("_patch")
    torch.testing.assert_close(
        distance, reference_distance(expected_a, expected_b, patch), atol=1e-5, rtol=1e-5
    )
    dims = {"ensemble": 128 + 32 + 32, "clip_vitb32": 32, "open_clip_vitb32": 32, "test_tiny": 64}
    if not patch:
        assert ours_a.shape == (2, dims.get(variant, 128))


@pytest.mark.parametrize("variant", ["ensemble", "dinov2_vitb14_patch"])
def test_merged_lora_equals_peft_layers(tmp_path, variant):
    pytest.importorskip("peft")
    write_release(tmp_path, variant, seed=3)
    merged = load(tmp_path, variant)
    unmerged = load(tmp_path, variant, merge=False)
    assert type(unmerged).__name__ == "PeftModel"
    x = images(2, 5)
    with torch.no_grad():
        torch.testing.assert_close(merged.embed(x), unmerged.embed(x), atol=1e-5, rtol=1e-5)


def test_untuned_backbones_need_no_adapter_and_no_network(tmp_path, no_network):
    weights = write_release(tmp_path, "dino_vitb16", seed=4)
    shutil.rmtree(tmp_path / "dino_vitb16_single_lora")
    model = load(tmp_path, "dino_vitb16", pretrained=False)
    x = images(1, 6)
    with torch.no_grad():
        torch.testing.assert_close(
            model.embed(x),
            reference_embedding(weights, "dino_vitb16", x, True, False),
            atol=1e-5,
            rtol=1e-5,
        )


def test_dino_backbone_is_the_teacher_or_the_hub_file_never_the_student(tmp_path):
    from_teacher = write_release(tmp_path / "a", "dino_vitb16", seed=7)
    from_hub = write_release(tmp_path / "b", "dino_vitb16", seed=7, hub_dino=True)
    x = images(1, 8)
    for folder, weights in ((tmp_path / "a", from_teacher), (tmp_path / "b", from_hub)):
        with torch.no_grad():
            torch.testing.assert_close(
                load(folder, "dino_vitb16").embed(x),
                reference_embedding(weights, "dino_vitb16", x, True, True),
                atol=1e-5,
                rtol=1e-5,
            )
    saved = torch.load(tmp_path / "a" / "dino_vitb16_pretrain.pth")
    del saved["teacher"]
    torch.save(saved, tmp_path / "a" / "dino_vitb16_pretrain.pth")
    (tmp_path / "a" / MANIFEST).unlink()
    with pytest.raises(CheckpointError) as error:
        load(tmp_path / "a", "dino_vitb16")
    assert "dino_vitbase16_pretrain.pth" in str(error.value)
    assert str(tmp_path / "a" / "checkpoints") in str(error.value)


def test_official_zip_is_accepted_as_folder_content_or_path(tmp_path, no_network):
    weights = write_release(tmp_path / "files", "clip_vitb32", seed=9)
    archive = tmp_path / "cache" / "dreamsim_clip_vitb32_checkpoint.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as opened:
        for path in (tmp_path / "files").rglob("*"):
            opened.write(path, path.relative_to(tmp_path / "files"))
    x = images(1, 10)
    expected = reference_embedding(weights, "clip_vitb32", x, True, True)
    with torch.no_grad():
        torch.testing.assert_close(
            load(tmp_path / "cache", "clip_vitb32").embed(x), expected, atol=1e-5, rtol=1e-5
        )
        other = tmp_path / "elsewhere.zip"
        shutil.copy(archive, other)
        model, _ = dreamsim(cache_dir=other, dreamsim_type="clip_vitb32", device="cpu")
        torch.testing.assert_close(model.embed(x), expected, atol=1e-5, rtol=1e-5)


def test_missing_file_names_it_the_folder_and_the_url(tmp_path, no_network):
    write_release(tmp_path, "ensemble", seed=1)
    (tmp_path / "clip_vitb16_pretrain.pth.tar").unlink()
    with pytest.raises(CheckpointError) as error:
        load(tmp_path, "ensemble", pretrained=False)
    message = str(error.value)
    assert "clip_vitb16_pretrain.pth.tar" in message and str(tmp_path) in message
    assert "dreamsim_ensemble_checkpoint.zip" in message


def test_a_file_damaged_after_first_use_is_caught(tmp_path):
    write_release(tmp_path, "synclr_vitb16", seed=2)
    load(tmp_path, "synclr_vitb16")
    assert (tmp_path / MANIFEST).exists()
    path = tmp_path / "synclr_vit_b_16.pth"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="differs from the checksum recorded"):
        load(tmp_path, "synclr_vitb16")


def test_half_and_to_move_every_tensor_including_proj(tmp_path):
    write_release(tmp_path, "ensemble", seed=3)
    model = load(tmp_path, "ensemble").half()
    dtypes = {t.dtype for t in [*model.parameters(), *model.buffers()] if t.numel()}
    assert dtypes == {torch.float16}
    assert model.extractor_list[1].proj.dtype == torch.float16


def test_mixed_precision_stays_close_and_returns_float32(tmp_path):
    write_release(tmp_path, "dino_vitb16", seed=5)
    model = load(tmp_path, "dino_vitb16")
    x = images(2, 11)
    with torch.no_grad():
        exact = model.embed(x)
        model.autocast_dtype = torch.bfloat16
        mixed = model.embed(x)
    assert mixed.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(exact, mixed).min() > 0.99


@pytest.mark.slow
def test_compiled_backbones_give_the_eager_numbers(tmp_path):
    write_release(tmp_path, "clip_vitb32", seed=9)  # "embedding" feature: norm + proj too
    eager = load(tmp_path, "clip_vitb32")
    compiled = load(tmp_path, "clip_vitb32", compile=True)
    assert isinstance(compiled.extractor_list[0].model, torch._dynamo.eval_frame.OptimizedModule)
    a, b = images(2, 12), images(2, 13)
    with torch.no_grad():
        torch.testing.assert_close(compiled.embed(a), eager.embed(a), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(compiled(a, b), eager(a, b), atol=1e-5, rtol=1e-5)


def test_weights_of_the_wrong_shape_or_keys_name_the_file():
    from dreamsim.backbones import build_vit

    from .dreamsim_checkpoints import _random_vit

    state = _random_vit(torch.Generator().manual_seed(0), "dino_vitb16", 128, 2, 32)
    state.pop("proj", None)
    build_vit(dict(state), "dino", where="dino.pth")  # the intact state loads
    wrong = {**state, "blocks.1.attn.qkv.weight": torch.zeros(5, 128)}
    with pytest.raises(CheckpointError, match=r"dino.pth: weights do not fit a dino ViT \(.*qkv"):
        build_vit(wrong, "dino", where="dino.pth")
    extra = {**state, "head.weight": torch.zeros(10, 128)}
    with pytest.raises(CheckpointError, match=r"dino.pth: .*unexpected \['head.weight'\]"):
        build_vit(extra, "dino", where="dino.pth")
    with pytest.raises(CheckpointError, match="not a ViT state dict"):
        build_vit({"fc.weight": torch.zeros(2, 2)}, "dino", where="dino.pth")


def test_bad_variant_names():
    with pytest.raises(ValueError, match="dreamsim_type must be one of"):
        dreamsim(dreamsim_type="vgg")
    with pytest.raises(ValueError, match="use_patch_model is available for"):
        dreamsim(dreamsim_type="clip_vitb32", use_patch_model=True)


def test_preprocess_and_batched_embedding_helper(tmp_path):
    if not DEMO_IMAGES.is_dir():
        pytest.skip("shared demo images absent")
    write_release(tmp_path, "dino_vitb16", seed=6)
    model = load(tmp_path, "dino_vitb16")
    image = Image.open(DEMO_IMAGES / "ref_1.png")
    tensor = preprocess(image)
    expected = image.convert("RGB").resize((224, 224), Image.Resampling.BICUBIC)
    assert tensor.shape == (1, 3, 224, 224)
    assert torch.equal(
        (tensor[0] * 255).round().byte().permute(1, 2, 0), torch.from_numpy(np.array(expected))
    )
    paths = sorted(DEMO_IMAGES.glob("*.png"))
    batched = embed_images(model, paths, batch_size=2, progress=False)
    with torch.no_grad():
        one_by_one = torch.cat([model.embed(preprocess(Image.open(p))) for p in paths])
    torch.testing.assert_close(batched, one_by_one, atol=1e-5, rtol=1e-5)


def test_importing_dreamsim_loads_no_optional_library_and_not_nights():
    code = (
        "import sys, dreamsim; print([m for m in ('open_clip', 'transformers', 'peft', "
        "'safetensors', 'nights') if m in sys.modules])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


@pytest.mark.skipif(
    not (REAL_WEIGHTS / "ensemble_lora").is_dir() or not DEMO_IMAGES.is_dir(),
    reason="the released ensemble weights are not in DREAMSIM_HOME",
)
def test_released_ensemble_gives_upstreams_numbers_on_the_demo_images():
    model, prep = dreamsim(cache_dir=REAL_WEIGHTS, device="cpu")
    ref, a, b = (
        prep(Image.open(DEMO_IMAGES / n)) for n in ("ref_1.png", "img_a_1.png", "img_b_1.png")
    )
    with torch.no_grad():
        assert round(model(ref, a).item(), 4) == 0.4453
        assert round(model(ref, b).item(), 4) == 0.2756


def test_downloads_the_official_zip_once_and_resumes(tmp_path, monkeypatch):
    import dataclasses

    from dreamsim.variants import VARIANTS as REGISTRY

    from .servers import Fault, ReleaseServer

    weights = write_release(tmp_path / "files", "clip_vitb32", seed=12)
    served = tmp_path / "served"
    served.mkdir()
    with zipfile.ZipFile(served / "weights.zip", "w") as opened:
        for path in (tmp_path / "files").rglob("*"):
            opened.write(path, path.relative_to(tmp_path / "files"))
    with ReleaseServer(served) as server:
        url = server.url + "weights.zip"
        monkeypatch.setitem(
            REGISTRY, "clip_vitb32", dataclasses.replace(REGISTRY["clip_vitb32"], url=url)
        )
        server.faults.append(Fault("drop", path="weights.zip", after=3000, times=1))
        cache = tmp_path / "cache"
        with pytest.raises(CheckpointError, match="run again to resume"):
            load(cache, "clip_vitb32", progress=False)
        model = load(cache, "clip_vitb32", progress=False)
        assert [r.range for r in server.log] == [None, "bytes=3000-"]
        load(cache, "clip_vitb32", progress=False)  # cached: no third request
        assert len(server.log) == 2
    x = images(1, 13)
    with torch.no_grad():
        torch.testing.assert_close(
            model.embed(x),
            reference_embedding(weights, "clip_vitb32", x, True, True),
            atol=1e-5,
            rtol=1e-5,
        )


@pytest.mark.gpu
def test_cuda_matches_cpu_and_bf16_stays_close(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    write_release(tmp_path, "ensemble", seed=14)
    cpu = load(tmp_path, "ensemble")
    gpu, _ = dreamsim(cache_dir=tmp_path, device="cuda")
    x = images(4, 15)
    with torch.no_grad():
        expected = cpu.embed(x)
        torch.testing.assert_close(gpu.embed(x.cuda()).cpu(), expected, atol=1e-4, rtol=1e-4)
        gpu.autocast_dtype = torch.bfloat16
        mixed = gpu.embed(x.cuda()).cpu()
    assert torch.nn.functional.cosine_similarity(mixed, expected).min() > 0.99
