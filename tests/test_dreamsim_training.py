"""Training-ready DreamSim: upstream's trainable parameters (LoRA on qkv, or an MLP head; the
CLIP projection only when asked), saving in the release layout that ours and upstream's
loaders read, and the model as a perceptual loss."""

from __future__ import annotations

import json
import os
import re

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from dreamsim import (  # noqa: E402
    DreamSimError,
    LoraSettings,
    dreamsim,
    save_pretrained,
    trainable_parameters,
    training_model,
)
from dreamsim.model import preprocess_batch  # noqa: E402
from dreamsim.variants import VARIANTS as REGISTRY  # noqa: E402

from .dreamsim_checkpoints import (  # noqa: E402
    open_clip_layout,
    random_backbone,
    reference_embedding,
    timm_layout,
    write_hub_cache,
    write_release,
)


def images(count=4, seed=0):
    return torch.rand(count, 3, 224, 224, generator=torch.Generator().manual_seed(seed))


def train(model, steps=3, seed=0):
    """A few Adam steps on a hinge loss of random triplets (upstream's optimizer settings)."""
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(trainable_parameters(model).values(), lr=3e-3, betas=(0.5, 0.999))
    ref, left, right = images(4, seed), images(4, seed + 1), images(4, seed + 2)
    target = torch.tensor([1.0, -1.0, 1.0, -1.0])
    for _ in range(steps):
        logit = model(ref, left) - model(ref, right)
        loss = torch.clamp(0.05 - logit * target, min=0).sum() / len(target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def load(folder, variant, **kwargs):
    model, _ = dreamsim(
        pretrained=True, cache_dir=folder, dreamsim_type=variant, device="cpu", **kwargs
    )
    return model


def distances(model, seed=9):
    with torch.no_grad():
        return model(images(3, seed), images(3, seed + 1))


@pytest.mark.parametrize("variant", ["test_tiny", "clip_vitb32", "ensemble"])
def test_lora_model_trains_exactly_upstreams_parameters(tmp_path, variant):
    write_release(tmp_path, variant, seed=1, adapter=False)
    model = training_model(variant, cache_dir=tmp_path, device="cpu")
    assert model.training and not model.normalize_embeds
    expected = set()
    for index, branch in enumerate(model.extractor_list):
        for block in range(len(branch.model.blocks)):
            for ab in "AB":
                expected.add(
                    f"extractor_list.{index}.model.blocks.{block}.attn.qkv.lora_{ab}.default.weight"
                )
    # No projection: upstream hands it to Adam, but as a tensor that does not require grad.
    trainable = trainable_parameters(model)
    assert set(trainable) == expected
    qkv = model.extractor_list[0].model.blocks[0].attn.qkv
    assert trainable[next(n for n in expected if "lora_A" in n)].shape[0] == 16
    assert qkv.scaling["default"] == 8 / 16 and qkv.lora_dropout["default"].p == 0.3
    untuned, _ = dreamsim(
        pretrained=False,
        cache_dir=tmp_path,
        dreamsim_type=variant,
        device="cpu",
        normalize_embeds=False,
    )
    torch.testing.assert_close(distances(model.eval()), distances(untuned))  # B starts at 0


def test_lora_settings_and_the_projection_switch(tmp_path):
    write_release(tmp_path, "clip_vitb32", seed=2, adapter=False)
    model = training_model(
        "clip_vitb32",
        cache_dir=tmp_path,
        lora=LoraSettings(r=4, alpha=32, dropout=0.0),
        train_projection=True,
        device="cpu",
    )
    names = trainable_parameters(model)
    assert "extractor_list.0.proj" in names
    assert {p.shape[0] for n, p in names.items() if "lora_A" in n} == {4}
    assert model.extractor_list[0].model.blocks[1].attn.qkv.scaling["default"] == 8


def test_mlp_head_is_upstreams_on_frozen_backbones(tmp_path):
    weights = write_release(tmp_path, "clip_vitb32", seed=3, adapter=False)
    model = training_model("clip_vitb32", method="mlp", cache_dir=tmp_path, device="cpu")
    assert set(trainable_parameters(model)) == {
        "mlp.fc1.weight",
        "mlp.fc1.bias",
        "mlp.fc2.weight",
        "mlp.fc2.bias",
    }
    head = model.mlp
    assert head.fc1.weight.shape == (512, 32) and head.fc2.weight.shape == (32, 512)
    x = images(2, 4)
    features = reference_embedding(weights, "clip_vitb32", x, normalize=False, lora=False)
    hidden = torch.relu(features @ head.fc1.weight.T + head.fc1.bias)
    expected = hidden @ head.fc2.weight.T + head.fc2.bias + features
    with torch.no_grad():
        torch.testing.assert_close(model.embed(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("variant", "train_projection"),
    [("test_tiny", False), ("clip_vitb32", False), ("clip_vitb32", True)],
)
def test_saved_lora_model_loads_with_the_trained_distances(tmp_path, variant, train_projection):
    write_release(tmp_path / "base", variant, seed=4, adapter=False)
    model = train(
        training_model(
            variant,
            cache_dir=tmp_path / "base",
            train_projection=train_projection,
            device="cpu",
        )
    )
    run = save_pretrained(model, tmp_path / "run")
    adapter = REGISTRY[variant].adapter
    assert sorted(p.name for p in (run / adapter).iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    loaded = load(run, variant, normalize_embeds=False)
    torch.testing.assert_close(distances(loaded), distances(model), atol=1e-5, rtol=1e-5)
    base = REGISTRY[variant].backbones[0].checkpoint
    if not train_projection:  # an untouched base file is a hard link, not a copy
        assert os.path.samefile(run / base, tmp_path / "base" / base)
    else:  # the trained projection is written into the release file, where upstream reads it
        saved = torch.load(run / base, weights_only=True)["state_dict"]["proj"]
        torch.testing.assert_close(saved, model.extractor_list[0].proj.detach())
        original = torch.load(tmp_path / "base" / base, weights_only=True)["state_dict"]["proj"]
        assert not torch.equal(saved, original)
    assert json.loads((run / "dreamsim_manifest.json").read_text()).keys() == {adapter, base}


def test_a_dino_model_saves_both_files_upstream_opens(tmp_path):
    write_release(tmp_path / "base", "dino_vitb16", seed=16, hub_dino=True, adapter=False)
    model = train(training_model("dino_vitb16", cache_dir=tmp_path / "base", device="cpu"))
    run = save_pretrained(model, tmp_path / "run")
    for name in ("dino_vitb16_pretrain.pth", "checkpoints/dino_vitbase16_pretrain.pth"):
        assert os.path.samefile(run / name, tmp_path / "base" / name)
    loaded = load(run, "dino_vitb16", normalize_embeds=False)
    torch.testing.assert_close(distances(loaded), distances(model), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", ["dinov2_vitl14", "clip_vitb32", "open_clip_vitb32"])
def test_a_hub_based_model_saves_its_base_beside_the_adapter(tmp_path, variant):
    backbone = REGISTRY[variant].backbones[0]
    layout = {"timm": timm_layout, "open_clip": open_clip_layout}[backbone.hub.layout]
    state = random_backbone(backbone.name, seed=5)
    write_hub_cache(tmp_path / "hub", backbone.hub.repo, backbone.hub.filename, layout(state))
    model = training_model(
        variant,
        cache_dir=tmp_path / "empty",
        hub_cache_dir=tmp_path / "hub",
        train_projection=True,
    )
    run = save_pretrained(train(model.cpu()), tmp_path / "run")
    copy = run / f"{backbone.name}.safetensors"
    loaded = load(run, variant, normalize_embeds=False, hub_cache_dir=tmp_path / "none")
    assert loaded.extractor_list[0].source.path == copy
    torch.testing.assert_close(distances(loaded), distances(model), atol=1e-5, rtol=1e-5)
    if backbone.feature == "embedding":  # the trained projection, in the Hub file's layout
        saved = load_file(str(copy))
        trained = model.extractor_list[0].proj.detach()
        if backbone.hub.layout == "timm":
            torch.testing.assert_close(saved["head.weight"], trained.T)
        else:
            torch.testing.assert_close(saved["visual.proj"], trained)
        assert not torch.equal(trained, state["proj"])


@pytest.mark.filterwarnings("ignore:Already found a `peft_config`")  # upstream's sequence
def test_saved_adapter_is_what_upstreams_peft_loading_reads(tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model

    write_release(tmp_path / "base", "clip_vitb32", seed=6, adapter=False)
    model = train(training_model("clip_vitb32", cache_dir=tmp_path / "base", device="cpu"))
    run = save_pretrained(model, tmp_path / "run")
    folder = run / "clip_vitb32_single_lora"
    config = json.loads((folder / "adapter_config.json").read_text())
    upstream_keys = ["r", "lora_alpha", "lora_dropout", "bias", "target_modules"]
    assert config["peft_type"] == "LORA" and set(upstream_keys) <= set(config)
    assert (config["r"], config["lora_alpha"], config["lora_dropout"]) == (16, 8.0, 0.3)
    keys = set(load_file(str(folder / "adapter_model.safetensors")))
    pattern = (
        r"base_model\.model\.extractor_list\.0\.model\.blocks\.\d\.attn\.qkv\.lora_[AB]\.weight"
    )
    assert len(keys) == 4 and all(re.fullmatch(pattern, k) for k in keys)
    # upstream 0.2.1's dreamsim(): LoraConfig from five json fields, get_peft_model, then
    # PeftModel.from_pretrained on the wrapped model's base with the adapter folder
    base, _ = dreamsim(
        pretrained=False,
        cache_dir=run,
        dreamsim_type="clip_vitb32",
        device="cpu",
        normalize_embeds=False,
    )
    wrapped = get_peft_model(base, LoraConfig(**{k: config[k] for k in upstream_keys}))
    upstream = PeftModel.from_pretrained(wrapped.base_model.model, str(folder)).eval()
    torch.testing.assert_close(distances(upstream), distances(model), atol=1e-5, rtol=1e-5)


def test_training_continues_from_a_released_adapter(tmp_path):
    write_release(tmp_path, "dino_vitb16", seed=7, rank=4, lora_alpha=2.0)
    model = training_model("dino_vitb16", cache_dir=tmp_path, pretrained=True, device="cpu")
    released = load(tmp_path, "dino_vitb16", normalize_embeds=False)
    torch.testing.assert_close(distances(model.eval()), distances(released), atol=1e-5, rtol=1e-5)
    lora = {n: p for n, p in trainable_parameters(model).items() if "lora_A" in n}
    assert {p.shape[0] for p in lora.values()} == {4}
    with pytest.raises(DreamSimError, match="holds a LoRA adapter"):
        training_model("dino_vitb16", method="mlp", cache_dir=tmp_path, pretrained=True)


def test_saved_mlp_head_loads_and_training_continues_from_it(tmp_path):
    write_release(tmp_path / "base", "test_tiny", seed=8, adapter=False)
    model = train(training_model("test_tiny", method="mlp", cache_dir=tmp_path / "base"))
    run = save_pretrained(model, tmp_path / "run")
    assert (run / "test_tiny_single_mlp.safetensors").is_file()
    loaded = load(run, "test_tiny", normalize_embeds=False)
    assert loaded.weights_id.endswith("-mlp")
    torch.testing.assert_close(distances(loaded), distances(model), atol=1e-5, rtol=1e-5)
    again = training_model("test_tiny", method="mlp", cache_dir=run, pretrained=True)
    torch.testing.assert_close(distances(again.eval()), distances(model), atol=1e-5, rtol=1e-5)


def test_saving_again_into_the_same_folder_keeps_it_loadable(tmp_path):
    write_release(tmp_path, "test_tiny", seed=9, adapter=False)
    model = train(training_model("test_tiny", cache_dir=tmp_path))
    save_pretrained(model, tmp_path)
    train(model.train(), seed=1)
    save_pretrained(model, tmp_path)  # a later epoch over the first: manifest updated
    loaded = load(tmp_path, "test_tiny", normalize_embeds=False)
    torch.testing.assert_close(distances(loaded), distances(model), atol=1e-5, rtol=1e-5)


def test_nothing_trained_is_refused_and_unknown_methods_are_named(tmp_path):
    write_release(tmp_path, "test_tiny", seed=10, adapter=False)
    untuned, _ = dreamsim(pretrained=False, cache_dir=tmp_path, dreamsim_type="test_tiny")
    with pytest.raises(DreamSimError, match="nothing trained to save"):
        save_pretrained(untuned, tmp_path / "run")
    with pytest.raises(DreamSimError, match="method must be one of lora, mlp, not 'adapter'"):
        training_model("test_tiny", method="adapter", cache_dir=tmp_path)


def test_distance_is_a_perceptual_loss_with_gradients_for_the_input(tmp_path):
    write_release(tmp_path, "test_tiny", seed=11)
    model = load(tmp_path, "test_tiny")
    target = images(1, 12)
    start = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(13))
    x = start.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=0.01)
    losses = []
    for _ in range(20):
        loss = model(preprocess_batch(x), target).sum()  # resized in the graph, not detached
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert losses[-1] < 0.5 * losses[0]
    assert not any(p.requires_grad for p in model.parameters())  # only the image moved


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    config=st.one_of(
        st.binary(max_size=40),
        st.fixed_dictionaries(
            {},
            optional={
                "r": st.one_of(st.integers(-2, 20), st.text(max_size=3)),
                "lora_alpha": st.one_of(st.floats(-5, 50), st.none()),
                "lora_dropout": st.floats(0, 1),
                "target_modules": st.lists(st.sampled_from(["qkv", "proj", "fc9"]), max_size=2),
            },
        ).map(lambda d: json.dumps(d).encode()),
    ),
    shapes=st.dictionaries(
        st.sampled_from(
            [
                "base_model.model.extractor_list.0.model.blocks.0.attn.qkv.lora_A.weight",
                "base_model.model.extractor_list.0.model.blocks.1.attn.qkv.lora_B.weight",
                "base_model.model.extractor_list.3.model.blocks.0.attn.qkv.lora_A.weight",
                "mlp.fc1.weight",
                "mlp.fc2.bias",
            ]
        ),
        st.lists(st.integers(0, 70), min_size=1, max_size=2),
        max_size=4,
    ),
    method=st.sampled_from(["lora", "mlp"]),
)
def test_any_tuned_files_give_a_model_or_a_dreamsim_error(tmp_path, config, shapes, method):
    from safetensors.torch import save_file

    folder = tmp_path / os.urandom(4).hex()
    write_release(folder, "test_tiny", seed=14, adapter=False)
    tensors = {key: torch.ones(shape) for key, shape in shapes.items()}
    if method == "lora":
        (folder / "test_tiny_single_lora").mkdir()
        (folder / "test_tiny_single_lora" / "adapter_config.json").write_bytes(config)
        save_file(tensors, str(folder / "test_tiny_single_lora" / "adapter_model.safetensors"))
    else:
        save_file(tensors, str(folder / "test_tiny_single_mlp.safetensors"))
    try:
        training_model("test_tiny", method=method, cache_dir=folder, pretrained=True)
    except DreamSimError as error:
        assert "\n" not in str(error)


@pytest.mark.parametrize("module", ["dreamsim.training", "dreamsim.synthetic"])
def test_docstring_examples_run(module, tmp_path, monkeypatch):
    import doctest
    import importlib
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    result = doctest.testmod(importlib.import_module(module), optionflags=flags)
    assert result.attempted > 3 and result.failed == 0


def test_weights_id_follows_the_trained_values(tmp_path):
    write_release(tmp_path, "test_tiny", seed=15, adapter=False)
    model = training_model("test_tiny", cache_dir=tmp_path)
    first = model.weights_id
    assert first == model.weights_id
    train(model, steps=1)
    assert model.weights_id != first  # a score cache never serves an earlier epoch's scores


@pytest.mark.gpu
def test_a_bf16_training_step_on_cuda_saves_and_reloads(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    write_release(tmp_path / "base", "clip_vitb32", seed=17, adapter=False)
    model = training_model(
        "clip_vitb32", cache_dir=tmp_path / "base", train_projection=True, device="cuda"
    )
    model.autocast_dtype = torch.bfloat16
    optimizer = torch.optim.Adam(trainable_parameters(model).values(), lr=3e-3, betas=(0.5, 0.999))
    ref, left, right = (images(8, seed).cuda() for seed in (1, 2, 3))
    vote = torch.tensor([1.0, -1.0] * 4, device="cuda")
    before = model.extractor_list[0].proj.detach().clone()
    for _ in range(3):
        loss = torch.clamp(0.05 - (model(ref, left) - model(ref, right)) * vote, min=0).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert torch.isfinite(loss) and not torch.equal(before, model.extractor_list[0].proj)
    model.autocast_dtype = None
    run = save_pretrained(model.eval(), tmp_path / "run")
    loaded = load(run, "clip_vitb32", normalize_embeds=False).cuda()
    with torch.no_grad():
        torch.testing.assert_close(loaded(left, right), model(left, right), atol=1e-4, rtol=1e-4)
