"""Training-ready DreamSim models, and saving a trained one in the release layout.

Upstream's recipe (``training/train.py``, ``configs/*.yaml``): either LoRA on every
``attn.qkv`` (r=16, alpha=8, dropout 0.3, no bias), or, instead, an MLP head (hidden size 512,
``fc2(relu(fc1(x))) + x``) on the concatenated features of the frozen backbones. The CLIP /
OpenCLIP projection of an ``embedding`` feature stays as it is in both: upstream hands it to
Adam, but it is a tensor loaded from the checkpoint without ``requires_grad``, so Adam never
changes it, and no released model has a trained one (``train_projection=True`` trains it, a
departure from upstream). Embeddings are not normalised while training
(``normalize_embeds=False``).

A model is trained here as a plain :class:`~dreamsim.model.DreamSim` (LoRA layers injected in
place, so it keeps its type, its ``embed`` and its distances); :func:`save_pretrained` writes
it so that ``dreamsim(pretrained=True, cache_dir=folder, dreamsim_type=...)`` loads it, and
upstream's ``dreamsim`` package too when the backbones came from the release files.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .backbones import with_projection
from .errors import DreamSimError, VariantError
from .lora import adapter_config, inject_lora, load_lora, lora_tensors
from .model import DreamSim, MlpHead, assemble, default_device, read_mlp_head
from .variants import resolve_variant
from .weights import BaseSource, atomic_write, locate, read_source, record_manifest

METHODS = ("lora", "mlp")


@dataclass(frozen=True)
class LoraSettings:
    """LoRA hyperparameters; the defaults are upstream's training recipe."""

    r: int = 16
    alpha: float = 8.0
    dropout: float = 0.3
    target_modules: tuple[str, ...] = ("qkv",)

    def config(self) -> dict:
        """The ``adapter_config.json`` these settings are saved as."""
        return adapter_config(self.r, self.alpha, self.dropout, self.target_modules)


def training_model(
    dreamsim_type: str = "ensemble",
    *,
    method: str = "lora",
    use_patch_model: bool = False,
    cache_dir: str | os.PathLike | None = None,
    pretrained: bool = False,
    lora: LoraSettings | None = None,
    hidden_size: int = 512,
    train_projection: bool = False,
    device: str | torch.device | None = None,
    download: bool = True,
    verify: bool = True,
    progress: bool | None = None,
    hub_cache_dir: str | os.PathLike | None = None,
) -> DreamSim:
    """A DreamSim whose trainable parameters are exactly upstream's, in train mode.

    Args:
        dreamsim_type: any variant of ``dreamsim.VARIANTS`` (released or Hub-based; the
            ``test_tiny`` one for tests).
        method: ``lora`` (LoRA layers on every ``attn.qkv``) or ``mlp`` (an MLP head on the
            frozen backbones).
        use_patch_model: the CLS + patch variant of ``dreamsim_type``.
        cache_dir: the variant's files (default ``$DREAMSIM_HOME``); untuned backbones
            missing there come from the Hugging Face Hub (see :func:`dreamsim.dreamsim`).
        pretrained: False: start from the untuned backbones (fresh LoRA layers: B = 0, so
            the model starts as the untuned one; or a fresh MLP head). True: continue from the
            tuned weights in ``cache_dir`` (the released adapter, or a saved model), with the
            adapter's own r, alpha and dropout.
        lora: LoRA settings of a fresh adapter (default :class:`LoraSettings`: upstream's).
        hidden_size: hidden width of a fresh MLP head (upstream: 512).
        train_projection: whether the CLIP / OpenCLIP projection of an ``embedding`` feature
            trains. Default False, as upstream's recipe in effect does (the tensor it hands to
            Adam does not require grad) and every released model keeps; True departs from it.
        device: default CUDA, else MPS, else CPU.
        download, verify, progress, hub_cache_dir: as for :func:`dreamsim.dreamsim`.

    Returns:
        The model in train mode with ``normalize_embeds=False``; pass
        ``trainable_parameters(model).values()`` to the optimizer.

    Raises:
        VariantError: an unknown variant or method.
        CheckpointError: missing weights (the message says how to fetch them), or tuned
            weights of the other method.

    Example (upstream's optimizer and hinge loss on one random batch)::

        >>> import tempfile, torch
        >>> from dreamsim import trainable_parameters, training_model, write_tiny_weights
        >>> folder = write_tiny_weights(tempfile.mkdtemp())
        >>> model = training_model("test_tiny", cache_dir=folder, device="cpu")
        >>> sorted(trainable_parameters(model))[:2]
        ['extractor_list.0.model.blocks.0.attn.qkv.lora_A.default.weight',
         'extractor_list.0.model.blocks.0.attn.qkv.lora_B.default.weight']
        >>> optimizer = torch.optim.Adam(
        ...     trainable_parameters(model).values(), lr=3e-4, betas=(0.5, 0.999))
        >>> ref, left, right = torch.rand(3, 2, 3, 224, 224)
        >>> vote = torch.tensor([1.0, -1.0])  # +1: right is closer to ref
        >>> logit = model(ref, left) - model(ref, right)
        >>> loss = torch.clamp(0.05 - logit * vote, min=0).sum() / len(vote)
        >>> loss.backward()
        >>> optimizer.step()
    """
    if method not in METHODS:
        raise VariantError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    variant = resolve_variant(dreamsim_type, use_patch_model)
    located = locate(
        variant,
        cache_dir,
        tuned=pretrained,
        download=download,
        verify=verify,
        progress=progress,
        hub_cache_dir=hub_cache_dir,
    )
    model = assemble(variant, located, normalize_embeds=False)
    tuning = located.tuning
    if tuning is not None and (tuning.name == variant.mlp_head) != (method == "mlp"):
        raise DreamSimError(
            f"{tuning} holds {'an MLP head' if method == 'lora' else 'a LoRA adapter'}, not "
            f"what method={method!r} continues; pick the other method, or pretrained=False"
        )
    if method == "lora":
        if tuning is not None:
            config = load_lora(model, tuning)
        else:
            config = (lora or LoraSettings()).config()
            inject_lora(model, config)
        model.lora_config = {**config, "inference_mode": True}
    else:
        features = model.features
        model.mlp = read_mlp_head(tuning, features) if tuning else MlpHead(features, hidden_size)
        model.mlp.requires_grad_(True)
    if train_projection:
        for branch in model.extractor_list:
            if branch.feature == "embedding":
                branch.make_projection_trainable()
    model.weights_id = f"{located.weights_id}-training"
    return model.to(device or default_device()).train()


def trainable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The parameters that train, by name: what the optimizer gets, and what a training
    checkpoint needs (``model.load_state_dict(saved, strict=False)`` puts them back)."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def save_pretrained(model: DreamSim, folder: str | os.PathLike) -> Path:
    """Writes a trained model in the release layout, so that
    ``dreamsim(pretrained=True, cache_dir=folder, dreamsim_type=...)`` loads it.

    Written: ``{adapter}/adapter_config.json`` + ``adapter_model.safetensors`` under
    upstream's keys (LoRA), or ``{variant}_mlp.safetensors`` (``mlp.fc1.weight`` ... as
    upstream names them); beside it, the untuned weights the model was built from: hard links
    (copies across file systems) of the release files, or of the Hub file as
    ``{backbone}.safetensors``; a file holding a trained projection is rewritten with it.
    Every write is atomic; ``dreamsim_manifest.json`` records the new files' sha256.

    Args:
        model: from :func:`training_model` (unwrapped from DDP / accelerate), trained.
        folder: where to write; existing files of an earlier save are replaced.

    Returns:
        ``folder``.

    Raises:
        DreamSimError: the model holds neither LoRA layers nor an MLP head.

    Example::

        >>> import tempfile, torch
        >>> from dreamsim import dreamsim, save_pretrained, training_model, write_tiny_weights
        >>> folder = write_tiny_weights(tempfile.mkdtemp())
        >>> model = training_model("test_tiny", cache_dir=folder, device="cpu")
        >>> run = save_pretrained(model.eval(), tempfile.mkdtemp())
        >>> sorted(path.name for path in run.iterdir())
        ['dreamsim_manifest.json', 'test_tiny_pretrain.pth', 'test_tiny_single_lora']
        >>> trained, _ = dreamsim(pretrained=True, cache_dir=run, dreamsim_type="test_tiny",
        ...                       normalize_embeds=False, device="cpu")
        >>> a, b = torch.rand(2, 1, 3, 224, 224)
        >>> torch.allclose(trained(a, b), model(a, b), atol=1e-6)
        True
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    variant = model.variant
    lora = lora_tensors(model)
    if lora:
        config = getattr(model, "lora_config", None)
        if config is None:
            raise DreamSimError("the model's LoRA layers were not made by training_model")
        _write_adapter(folder / variant.adapter, config, lora)
        written = [variant.adapter]
    elif isinstance(model.mlp, MlpHead):
        from safetensors.torch import save_file

        head = {f"mlp.{k}": v.float().cpu().contiguous() for k, v in model.mlp.state_dict().items()}
        atomic_write(folder / variant.mlp_head, lambda path: save_file(head, str(path)))
        written = [variant.mlp_head]
    else:
        raise DreamSimError("nothing trained to save: the model has no LoRA layers or MLP head")
    for branch in model.extractor_list:
        trained_proj = branch.proj if isinstance(branch.proj, nn.Parameter) else None
        written += _save_base(branch.source, folder, trained_proj)
    record_manifest(folder, list(dict.fromkeys(written)))
    return folder


def _write_adapter(target: Path, config: dict, tensors: dict[str, torch.Tensor]) -> None:
    """The adapter folder, built beside ``target`` and moved into place."""
    from safetensors.torch import save_file

    partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    (partial / "adapter_config.json").write_text(json.dumps(config, indent=2))
    save_file(tensors, str(partial / "adapter_model.safetensors"))
    previous = target.with_name(f".{target.name}.{os.getpid()}.old")
    if target.exists():
        os.replace(target, previous)
    os.replace(partial, target)
    shutil.rmtree(previous, ignore_errors=True)


def _link(source: Path, target: Path) -> None:
    source = Path(os.path.realpath(source))  # a Hub cache entry is a link to its blob
    if target.exists() and os.path.samefile(source, target):
        return

    def place(path: Path) -> None:
        try:
            os.link(source, path)
        except OSError:  # another file system, or links not allowed
            shutil.copyfile(source, path)

    atomic_write(target, place)


def _save_base(source: BaseSource, folder: Path, trained_proj: torch.Tensor | None) -> list[str]:
    """Writes the untuned weights of one backbone into ``folder``; returns their names."""
    for path, name in source.companions:
        _link(path, folder / name)
    if trained_proj is None:
        _link(source.path, folder / source.name)
    else:
        content = with_projection(read_source(source), source.layout, trained_proj)
        if source.path.suffix == ".safetensors":
            from safetensors.torch import save_file

            atomic_write(folder / source.name, lambda path: save_file(content, str(path)))
        else:
            atomic_write(folder / source.name, lambda path: torch.save(content, path))
    return [source.name, *(name for _, name in source.companions)]
