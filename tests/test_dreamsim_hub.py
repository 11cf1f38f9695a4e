"""Backbones from the Hugging Face Hub: timm's and open_clip's layouts through the registry's
key maps, against the forward pass written from the spec; the cache, offline use, revisions,
and a local server standing in for the Hub."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")
pytest.importorskip("huggingface_hub")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from dreamsim import CheckpointError, dreamsim  # noqa: E402
from dreamsim.variants import VARIANTS as REGISTRY  # noqa: E402

from .dreamsim_checkpoints import (  # noqa: E402
    HUB_VARIANTS,
    VARIANTS,
    open_clip_layout,
    random_backbone,
    reference_embedding,
    save,
    timm_layout,
    write_hub_cache,
    write_release,
)
from .fake_hub import FakeHub  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LAYOUTS = {"timm": timm_layout, "open_clip": open_clip_layout}


def images(count=2, seed=0):
    return torch.rand(count, 3, 224, 224, generator=torch.Generator().manual_seed(seed))


def publish(cache: Path, variant: str, seed: int = 0) -> dict:
    """Writes random backbones of ``variant`` into a Hub cache, each in its registry entry's
    repo, file and layout; returns them in the release layout (for the reference)."""
    states = []
    for index, backbone in enumerate(REGISTRY[variant].backbones):
        state = random_backbone(backbone.name, seed=seed + index)
        hub = backbone.hub
        write_hub_cache(cache, hub.repo, hub.filename, LAYOUTS[hub.layout](state))
        states.append(state)
    return {"backbones": states}


def untuned(variant, cache_dir, hub_cache, **kwargs):
    model, _ = dreamsim(
        pretrained=False,
        cache_dir=cache_dir,
        dreamsim_type=variant.removesuffix("_patch"),
        use_patch_model=variant.endswith("_patch"),
        device="cpu",
        hub_cache_dir=hub_cache,
        **kwargs,
    )
    return model


@pytest.mark.parametrize(
    "variant",
    [
        "ensemble",
        "dino_vitb16",
        "clip_vitb32",
        "open_clip_vitb32",
        "dinov2_vitb14_patch",
        *HUB_VARIANTS,
    ],
)
def test_hub_layouts_give_the_reference_forward(tmp_path, variant):
    weights = publish(tmp_path / "hub", variant, seed=len(variant))
    model = untuned(variant, tmp_path / "empty", tmp_path / "hub", download=False)
    x = images(2, 1)
    with torch.no_grad():
        ours = model.embed(x)
    expected = reference_embedding(weights, variant, x, normalize=True, lora=False)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)
    assert [b.source.layout for b in model.extractor_list] == [
        b.hub.layout for b in REGISTRY[variant].backbones
    ]


def test_a_hub_entry_may_name_open_clips_pickle_instead(tmp_path, monkeypatch):
    variant = REGISTRY["open_clip_vitb32"]
    backbone = variant.backbones[0]
    hub = dataclasses.replace(backbone.hub, filename="open_clip_pytorch_model.bin")
    pickled = dataclasses.replace(backbone, hub=hub)
    monkeypatch.setitem(
        REGISTRY, "open_clip_vitb32", dataclasses.replace(variant, backbones=(pickled,))
    )
    weights = publish(tmp_path / "hub", "open_clip_vitb32", seed=6)
    model = untuned("open_clip_vitb32", tmp_path / "empty", tmp_path / "hub", download=False)
    x = images(1, 3)
    with torch.no_grad():
        torch.testing.assert_close(
            model.embed(x),
            reference_embedding(weights, "open_clip_vitb32", x, True, False),
            atol=1e-5,
            rtol=1e-5,
        )
    assert pickled.hub_copy == "open_clip_vitb32.bin"


def test_the_dinov2_position_table_is_resampled_from_518_px(tmp_path):
    weights = publish(tmp_path / "hub", "dinov2_vitl14")
    assert weights["backbones"][0]["pos_embed"].shape[1] == 1 + 37 * 37
    model = untuned("dinov2_vitl14", tmp_path / "empty", tmp_path / "hub", download=False)
    assert model.extractor_list[0].model.pos_embed.shape[1] == 1 + 16 * 16
    assert model.input_size == (3, 224, 224)


def test_release_files_come_before_the_hub(tmp_path):
    release = write_release(tmp_path / "cache", "clip_vitb32", seed=3, adapter=False)
    publish(tmp_path / "hub", "clip_vitb32", seed=4)
    model = untuned("clip_vitb32", tmp_path / "cache", tmp_path / "hub")
    x = images(1, 2)
    with torch.no_grad():
        torch.testing.assert_close(
            model.embed(x),
            reference_embedding(release, "clip_vitb32", x, True, False),
            atol=1e-5,
            rtol=1e-5,
        )
    assert model.extractor_list[0].source.layout == "release"


def test_a_hub_file_whose_keys_do_not_fit_names_the_file_and_the_keys(tmp_path):
    state = timm_layout(random_backbone("dinov2_vitl14"))
    state["reg_token"] = torch.zeros(1, 4, state["cls_token"].shape[-1])
    del state["norm.weight"]
    repo = REGISTRY["dinov2_vitl14"].backbones[0].hub.repo
    path = write_hub_cache(tmp_path / "hub", repo, "model.safetensors", state)
    with pytest.raises(CheckpointError) as error:
        untuned("dinov2_vitl14", tmp_path / "empty", tmp_path / "hub", download=False)
    message = str(error.value)
    assert str(path) in message and "'reg_token'" in message and "'norm.weight'" in message
    assert "\n" not in message


def test_an_embedding_feature_needs_the_projection(tmp_path):
    state = timm_layout(random_backbone("clip_vitb32"))
    del state["head.weight"], state["head.bias"]
    repo = REGISTRY["clip_vitb32"].backbones[0].hub.repo
    path = write_hub_cache(tmp_path / "hub", repo, "model.safetensors", state)
    with pytest.raises(CheckpointError, match="no projection") as error:
        untuned("clip_vitb32", tmp_path / "empty", tmp_path / "hub", download=False)
    assert str(path) in str(error.value)


def test_missing_hub_weights_offline_say_how_to_fetch_them(tmp_path):
    with pytest.raises(CheckpointError) as error:
        untuned("dinov2_vitl14", tmp_path / "empty", tmp_path / "hub")
    message = str(error.value)
    assert "timm/vit_large_patch14_dinov2.lvd142m/model.safetensors" in message
    assert "HF_HUB_OFFLINE=1" in message
    assert "`python -m dreamsim download dinov2_vitl14`" in message
    with pytest.raises(CheckpointError) as error:
        untuned("open_clip_vitb32", tmp_path / "empty", tmp_path / "hub")
    message = str(error.value)
    assert "open_clip_vitb32_pretrain.pth.tar" in message and "--from-hub" in message
    assert "dreamsim_open_clip_vitb32_checkpoint.zip" in message


# arbitrary tensors under the names the key maps and the ViT read
_KEYS = [
    "cls_token",
    "pos_embed",
    "patch_embed.proj.weight",
    "patch_embed.proj.bias",
    "norm.weight",
    "norm.bias",
    "head.weight",
    "head.bias",
    "blocks.0.norm1.weight",
    "blocks.0.attn.qkv.weight",
    "blocks.0.mlp.fc1.weight",
    "blocks.x.ls1.gamma",
    "visual.proj",
    "visual.class_embedding",
    "visual.positional_embedding",
    "visual.transformer.resblocks.0.attn.in_proj_weight",
]


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.one_of(
        st.binary(max_size=200),
        st.dictionaries(
            st.sampled_from(_KEYS),
            st.lists(st.integers(0, 5), min_size=0, max_size=4),
            max_size=10,
        ),
    ),
    st.sampled_from(["dinov2_vitl14", "clip_vitb32", "open_clip_vitb32"]),
)
def test_any_hub_file_gives_a_model_or_a_checkpoint_error(tmp_path, content, variant):
    hub = REGISTRY[variant].backbones[0].hub
    cache = tmp_path / f"hub-{os.urandom(4).hex()}"
    if isinstance(content, bytes):
        root = cache / f"models--{hub.repo.replace('/', '--')}"
        (root / "snapshots" / "c0").mkdir(parents=True)
        (root / "snapshots" / "c0" / hub.filename).write_bytes(content)
        (root / "refs").mkdir()
        (root / "refs" / "main").write_text("c0")
    else:
        tensors = {key: torch.ones(shape) for key, shape in content.items()}
        write_hub_cache(cache, hub.repo, hub.filename, tensors)
    try:
        untuned(variant, tmp_path / "empty", cache, download=False)
    except CheckpointError as error:
        assert "\n" not in str(error)


def _run(code: str, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )


EMBED = """
import dataclasses, sys, torch
from dreamsim import dreamsim
from dreamsim.variants import VARIANTS
variant = VARIANTS["dinov2_vitl14"]
backbone = variant.backbones[0]
pinned = dataclasses.replace(backbone, hub=dataclasses.replace(backbone.hub, revision=sys.argv[1]))
VARIANTS["dinov2_vitl14"] = dataclasses.replace(variant, backbones=(pinned,))
model, _ = dreamsim(pretrained=False, cache_dir=sys.argv[2], dreamsim_type="dinov2_vitl14",
                    device="cpu")
x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(5))
with torch.no_grad():
    torch.save(model.embed(x), sys.argv[3])
"""


def test_downloads_from_a_hub_server_by_revision_then_works_offline(tmp_path):
    repo = REGISTRY["dinov2_vitl14"].backbones[0].hub.repo
    main, tagged = random_backbone("dinov2_vitl14", seed=1), random_backbone("dinov2_vitl14", 2)
    served = {
        repo: {
            "main": {"model.safetensors": save(timm_layout(main))},
            "v2": {"model.safetensors": save(timm_layout(tagged))},
        }
    }
    env = {
        **os.environ,
        "HF_HUB_CACHE": str(tmp_path / "hub"),
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_TOKEN": "",
    }
    with FakeHub(served) as hub:
        env["HF_ENDPOINT"] = hub.url
        fetched = _run(
            "import sys; from dreamsim.__main__ import main; sys.exit(main())",
            env,
            "download",
            "dinov2_vitl14",
        )
        assert fetched.returncode == 0, fetched.stderr
        assert str(tmp_path / "hub") in fetched.stdout
        online = _run(EMBED, env, "v2", str(tmp_path / "empty"), str(tmp_path / "v2.pt"))
        assert online.returncode == 0, online.stderr
        assert ("GET", f"/{repo}/resolve/v2/model.safetensors") in hub.log
        assert ("GET", f"/{repo}/resolve/main/model.safetensors") in hub.log  # the download
        requests = len(hub.log)
    offline = {**env, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}
    again = _run(EMBED, offline, "v2", str(tmp_path / "empty"), str(tmp_path / "again.pt"))
    assert again.returncode == 0, again.stderr
    assert requests == len(hub.log)
    x = images(2, 5)
    expected = reference_embedding({"backbones": [tagged]}, "dinov2_vitl14", x, True, False)
    for name in ("v2.pt", "again.pt"):
        torch.testing.assert_close(torch.load(tmp_path / name), expected, atol=1e-5, rtol=1e-5)
    first = _run(EMBED, offline, "main", str(tmp_path / "empty"), str(tmp_path / "main.pt"))
    assert first.returncode == 0, first.stderr
    other = reference_embedding({"backbones": [main]}, "dinov2_vitl14", x, True, False)
    torch.testing.assert_close(torch.load(tmp_path / "main.pt"), other, atol=1e-5, rtol=1e-5)
    unknown = _run(EMBED, offline, "v3", str(tmp_path / "empty"), str(tmp_path / "v3.pt"))
    assert unknown.returncode != 0
    assert "CheckpointError" in unknown.stderr and "revision v3" in unknown.stderr


def test_the_registry_names_each_backbones_hub_repo():
    hubs = {b.name: b.hub for v in REGISTRY.values() for b in v.backbones}
    assert hubs["dino_vitb16"].repo == "timm/vit_base_patch16_224.dino"
    assert hubs["dinov2_vitb14"].repo == "timm/vit_base_patch14_dinov2.lvd142m"
    assert hubs["dinov2_vitl14"].repo == "timm/vit_large_patch14_dinov2.lvd142m"
    assert hubs["clip_vitb16"].repo == "timm/vit_base_patch16_clip_224.openai"
    assert hubs["clip_vitb32"].repo == "timm/vit_base_patch32_clip_224.openai"
    assert hubs["open_clip_vitb32"] == dataclasses.replace(
        hubs["open_clip_vitb32"],
        repo="timm/vit_base_patch32_clip_224.laion400m_e31",
        layout="open_clip",
        filename="open_clip_model.safetensors",
    )
    assert hubs["synclr_vitb16"] is None and hubs["test_tiny"] is None
    assert set(VARIANTS) | set(HUB_VARIANTS) == set(REGISTRY)
