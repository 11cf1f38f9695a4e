"""Merged DreamSim files that are valid safetensors but not what export writes: tensors of
another dtype or shape, NaN, keys renamed, dropped or added. Each loads into a model with finite
embeddings or is one CheckpointError naming the file; none builds a model larger than its
tensors describe."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from dreamsim import CheckpointError, dreamsim, export, load_merged  # noqa: E402

from .dreamsim_checkpoints import write_release  # noqa: E402

VARIANT = "clip_vitb32"


@pytest.fixture(scope="module")
def merged(tmp_path_factory):
    """The tensors and metadata of a merged file that export wrote."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    folder = tmp_path_factory.mktemp("merged")
    write_release(folder / VARIANT, VARIANT, seed=3)
    model, _ = dreamsim(cache_dir=folder / VARIANT, dreamsim_type=VARIANT, device="cpu")
    path = export(model, folder / "m.safetensors", format="safetensors")
    with safe_open(str(path), framework="pt") as opened:
        metadata = opened.metadata()
    return load_file(str(path)), metadata


def write(path, tensors, metadata):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    return path


def mutated(tensor, how: str, draw):
    if how == "dtype":
        return tensor.to(draw(st.sampled_from([torch.float16, torch.bfloat16, torch.int32])))
    if how == "nan":
        return torch.full_like(tensor, draw(st.sampled_from([float("nan"), float("inf")])))
    if how == "shape":
        return torch.zeros(draw(st.lists(st.integers(0, 6), max_size=3)))
    return tensor.flatten()


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_changed_tensor_loads_finite_or_is_one_checkpoint_error(merged, tmp_path, data):
    tensors, metadata = merged
    tensors = dict(tensors)
    key = data.draw(st.sampled_from(sorted(tensors)))
    how = data.draw(st.sampled_from(["dtype", "nan", "shape", "flatten", "drop", "rename"]))
    if how == "drop":
        del tensors[key]
    elif how == "rename":
        index = data.draw(st.sampled_from([1, 7, 10**9]))
        tensors[key.replace("blocks.0.", f"blocks.{index}.").replace(".proj", f".proj{index}")] = (
            tensors.pop(key)
        )
    else:
        tensors[key] = mutated(tensors[key], how, data.draw)
    path = write(tmp_path / "hostile.safetensors", tensors, metadata)
    try:
        model = load_merged(path, device="cpu")
    except CheckpointError as error:
        assert str(error).startswith(str(path)) and "\n" not in str(error)
        return
    embeddings = model.embed(torch.rand(2, 3, 224, 224))
    assert embeddings.shape[0] == 2 and torch.isfinite(embeddings).all()


def test_a_block_numbered_a_billion_builds_no_billion_blocks(merged, tmp_path, monkeypatch):
    import dreamsim.backbones as backbones

    tensors, metadata = merged
    key = next(k for k in tensors if ".blocks.0.mlp.fc1.weight" in k)
    tensors = {**tensors, key.replace("blocks.0.", "blocks.999999999."): tensors[key].clone()}
    built = []
    original = backbones.VisionTransformer.__init__

    def counted(self, *args, depth, **kwargs):
        built.append(depth)
        assert depth < 100, f"a ViT of {depth} blocks"
        original(self, *args, depth=depth, **kwargs)

    monkeypatch.setattr(backbones.VisionTransformer, "__init__", counted)
    path = write(tmp_path / "deep.safetensors", tensors, metadata)
    with pytest.raises(
        CheckpointError, match=r"blocks are not numbered 0 to \d+: largest 999999999"
    ):
        load_merged(path, device="cpu")
    assert built == []


def test_export_onto_a_folder_is_one_line_and_the_file_is_readable_by_others(
    tmp_path, capsys, monkeypatch
):
    import os
    import stat

    from dreamsim.__main__ import main

    folder = tmp_path / VARIANT
    write_release(folder, VARIANT, seed=3)
    command = ["export", VARIANT, "--format", "safetensors", "--cache-dir", str(folder)]
    for out in (tmp_path, ""):
        monkeypatch.chdir(tmp_path)
        before = sorted(p.name for p in tmp_path.iterdir())
        assert main([*command[:2], str(out), *command[2:]]) == 2
        error = capsys.readouterr().err
        assert error.startswith("python -m dreamsim export: error: cannot write ")
        assert error.count("\n") == 1 and "it is a folder" in error
        assert sorted(p.name for p in tmp_path.iterdir()) == before
    umask = os.umask(0o022)
    try:
        assert main([*command[:2], str(tmp_path / "m.safetensors"), *command[2:]]) == 0
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "m.safetensors").stat().st_mode) == 0o644


@pytest.mark.parametrize("proj", [None, [0], [0, 0]])
def test_a_clip_without_its_projection_is_one_checkpoint_error(merged, tmp_path, proj):
    """Found by the property test above: an empty (or dropped) CLIP projection loaded as no
    projection, and the first embedding failed with a matrix-size RuntimeError."""
    tensors, metadata = merged
    tensors = dict(tensors)
    if proj is None:
        del tensors["extractor_list.0.proj"]
    else:
        tensors["extractor_list.0.proj"] = torch.zeros(proj)
    path = write(tmp_path / "noproj.safetensors", tensors, metadata)
    with pytest.raises(CheckpointError, match=r"no extractor_list\.0\.proj, but clip_vitb32"):
        load_merged(path, device="cpu")
