"""The DreamSim model: backbones, features, embedding normalisation, distances, batching."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Iterable
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from .backbones import build_vit
from .errors import CheckpointError
from .lora import merge_adapter, wrap_with_peft
from .precision import resolve_precision, with_precision
from .variants import VARIANTS, Backbone, Variant, resolve_variant
from .weights import BaseSource, Located, backbone_state, locate, read_tensors

logger = logging.getLogger(__name__)
IMAGE_SIZE = 224
MERGED_FORMAT = "dreamsim-merged-1"  # metadata of a merged file (dreamsim.export)


class Branch(nn.Module):
    """One backbone with its input normalisation and feature; ``proj`` is a buffer (a
    parameter once made trainable), so ``.to()``, ``.half()`` and ``.bfloat16()`` move it with
    the rest. ``source`` says which file the untuned weights came from."""

    def __init__(
        self,
        backbone: Backbone,
        vit: nn.Module,
        proj: torch.Tensor | None,
        source: BaseSource | None = None,
    ):
        super().__init__()
        self.source = source
        self.feature = backbone.feature
        self.model = vit  # the name PEFT's adapter keys use: extractor_list.{i}.model...
        self.register_buffer("mean", torch.tensor(backbone.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(backbone.std).view(1, 3, 1, 1))
        self.register_buffer("proj", proj if proj is not None else torch.empty(0))

    @property
    def out_features(self) -> int:
        """The feature's width (per token for ``cls_patch``)."""
        return self.proj.shape[1] if self.feature == "embedding" else self.model.cls_token.shape[-1]

    def make_projection_trainable(self) -> None:
        """``proj`` becomes a parameter that requires grad (``embedding`` feature only)."""
        proj = self._buffers.pop("proj")
        self.proj = nn.Parameter(proj.detach().clone())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens = self.model((images - self.mean) / self.std)  # last block, before the norm
        if self.feature == "cls":
            return tokens[:, 0]
        if self.feature == "embedding":
            return self.model.norm(tokens)[:, 0] @ self.proj
        return tokens  # cls_patch: every token of the last block


class MlpHead(nn.Module):
    """Upstream's MLP head: one hidden ReLU layer with a residual, ``fc2(relu(fc1(x))) + x``,
    on the concatenated features (trained instead of LoRA, on a frozen backbone)."""

    def __init__(self, features: int, hidden: int = 512):
        super().__init__()
        self.fc1 = nn.Linear(features, hidden)
        self.fc2 = nn.Linear(hidden, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(nn.functional.relu(self.fc1(x))) + x


def read_mlp_head(path, features: int) -> MlpHead:
    """The :class:`MlpHead` of ``path`` (``mlp.fc1.weight`` ... as upstream names them), for
    embeddings of width ``features``."""
    tensors = read_tensors(path)
    try:
        hidden, width = tensors["mlp.fc1.weight"].shape
        if width != features or not hidden:
            raise ValueError(f"mlp.fc1.weight {(hidden, width)} does not take {features} features")
        head = MlpHead(features, hidden)
        head.load_state_dict({k.removeprefix("mlp."): v for k, v in tensors.items()})
    except (KeyError, ValueError, RuntimeError) as error:
        reason = str(error).strip().splitlines()[-1].strip()
        raise CheckpointError(f"{path}: not an MLP head for this model ({reason})") from None
    return head


def embedding_distance(embed_a: torch.Tensor, embed_b: torch.Tensor, is_patch: bool):
    """``1 - cos`` of two embeddings; patch tokens ``[B, T, D]`` compare as the concatenation
    of the CLS token and the mean of the patch tokens."""
    if is_patch:
        embed_a = torch.cat([embed_a[:, 0], embed_a[:, 1:].mean(dim=1)], dim=-1)
        embed_b = torch.cat([embed_b[:, 0], embed_b[:, 1:].mean(dim=1)], dim=-1)
    return 1 - nn.functional.cosine_similarity(embed_a, embed_b, dim=-1)


def normalize_embedding(embedding: torch.Tensor) -> torch.Tensor:
    """Mean over the feature dimension subtracted, then L2-normalised (per token for 3-D)."""
    centred = embedding - embedding.mean(dim=-1, keepdim=True)
    return centred / centred.norm(dim=-1, keepdim=True)


class DreamSim(nn.Module):
    """``model(a, b)`` gives distances ``[B]``, ``model.embed(x)`` embeddings.

    Inputs are ``[B, 3, 224, 224]`` float images in [0, 1] (see :func:`preprocess`); the
    path keeps gradients with respect to them (a perceptual loss: ``model(x, target).sum()``).
    """

    def __init__(self, variant: Variant, branches: list[Branch], normalize_embeds: bool):
        super().__init__()
        self.variant = variant
        self.extractor_list = nn.ModuleList(branches)
        self.mlp: nn.Module = nn.Identity()  # an MlpHead when one was trained
        self.normalize_embeds = normalize_embeds
        self.is_patch = variant.is_patch
        self.input_size = variant.input_size
        self.autocast_dtype: torch.dtype | None = None
        self.quantized = False  # int8 linear layers (see dreamsim.precision)
        self._weights_id = ""

    @property
    def precision(self) -> str:
        """``fp32``, ``bf16``, ``fp16`` (autocast) or ``int8`` (quantized linear layers)."""
        if self.quantized:
            return "int8"
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.autocast_dtype, "fp32")

    @property
    def weights_id(self) -> str:
        """A content id of the weights, for score caches: the files' it was built from, plus
        the current values of the parameters that train, if any (it changes as they learn);
        it names the precision unless fp32, so that scores of a reduced precision never stand
        in for exact ones."""
        files = self._weights_id
        precision = "" if self.precision == "fp32" else f"-{self.precision}"
        trainable = [p for p in self.parameters() if p.requires_grad]
        if not trainable:
            return files + precision
        digest = hashlib.sha256(files.encode())
        for parameter in trainable:
            digest.update(parameter.detach().float().cpu().numpy().tobytes())
        return f"{files}-{digest.hexdigest()[:12]}{precision}"

    @weights_id.setter
    def weights_id(self, value: str) -> None:
        self._weights_id = value

    @property
    def features(self) -> int:
        """The embedding's width (per token for the patch variants)."""
        return sum(branch.out_features for branch in self.extractor_list)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _autocast(self, images: torch.Tensor):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(images.device.type, dtype=self.autocast_dtype)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, D]`` embeddings (``[B, T, D]`` tokens for the patch variants), float32 when
        mixed precision is on."""
        if images.dim() == 3:
            images = images.unsqueeze(0)
        with self._autocast(images):
            parts = [branch(images) for branch in self.extractor_list]
        embedding = (parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)).float()
        embedding = self.mlp(embedding)
        return normalize_embedding(embedding) if self.normalize_embeds else embedding

    def distance_from_embeddings(
        self, embed_a: torch.Tensor, embed_b: torch.Tensor
    ) -> torch.Tensor:
        """``1 - cos`` of two embeddings (patch variants: concat of CLS and mean patch)."""
        return embedding_distance(embed_a, embed_b, self.is_patch)

    def forward(self, images_a: torch.Tensor, images_b: torch.Tensor) -> torch.Tensor:
        return self.distance_from_embeddings(self.embed(images_a), self.embed(images_b))


def _to_tensor(image: Image.Image) -> torch.Tensor:
    image = image.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC)
    return (
        torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
        .view(IMAGE_SIZE, IMAGE_SIZE, 3)
        .permute(2, 0, 1)
        .float()
        .div_(255)
    )


def preprocess(image: Image.Image) -> torch.Tensor:
    """Upstream's preprocessing: RGB, PIL bicubic resize to 224 px, [0, 1], ``[1, 3, 224, 224]``."""
    return _to_tensor(image).unsqueeze(0)


def preprocess_batch(images: torch.Tensor) -> torch.Tensor:
    """The tensor path for decoded images ``[B, 3, H, W]`` (uint8 or float in [0, 1]).

    Already 224 px: only converted. Otherwise resized with torch's antialiased bicubic, which
    is close to, not bit-identical with, PIL's: use :func:`preprocess` for exact parity.
    """
    if images.dtype == torch.uint8:
        images = images.float().div_(255)
    if images.shape[-2:] != (IMAGE_SIZE, IMAGE_SIZE):
        images = nn.functional.interpolate(
            images, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bicubic", antialias=True
        ).clamp_(0, 1)
    return images


def default_device() -> str:
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def dreamsim(
    pretrained: bool = True,
    device: str | torch.device | None = None,
    cache_dir: str | os.PathLike | None = None,
    normalize_embeds: bool = True,
    dreamsim_type: str = "ensemble",
    use_patch_model: bool = False,
    dtype: torch.dtype | None = None,
    *,
    merge: bool = True,
    compile: bool = False,
    verify: bool = True,
    download: bool = True,
    progress: bool | None = None,
    hub_cache_dir: str | os.PathLike | None = None,
    precision: str | None = None,
):
    """Builds DreamSim; the same call and the same numbers as upstream's ``dreamsim()``.

    Args:
        pretrained: load the tuned weights in ``cache_dir`` (the released LoRA adapter, or
            a trained adapter or MLP head saved by :func:`~dreamsim.save_pretrained`);
            download the official zip when there are none. False: the untuned backbones,
            never the zip (those missing from ``cache_dir`` come from the Hugging Face Hub).
        device: default CUDA, else MPS, else CPU.
        cache_dir: folder with the release files or zip, or the zip (default
            ``$DREAMSIM_HOME``, else ``~/.cache/dreamsim``); or a merged ``.safetensors``
            file written by :func:`~dreamsim.export` (see :func:`~dreamsim.load_merged`).
        normalize_embeds: centre and L2-normalise embeddings (upstream's default here).
        dreamsim_type: ``ensemble``, ``dino_vitb16``, ``clip_vitb32``, ``open_clip_vitb32``,
            ``dinov2_vitb14``, ``synclr_vitb16`` (released), ``dinov2_vitl14`` (Hub backbone,
            no release) or ``test_tiny`` (for tests); see ``dreamsim.VARIANTS``.
        use_patch_model: the CLS + patch variants (dino_vitb16, dinov2_vitb14).
        dtype: run the backbones under ``torch.autocast`` with this dtype (``torch.bfloat16``
            on CPU or CUDA, ``torch.float16`` on CUDA); embeddings come back as float32.
            The same as ``precision="bf16"`` / ``"fp16"``.
        merge: merge LoRA into the weights (default); False keeps PEFT layers (for training).
        compile: ``torch.compile`` each backbone.
        verify: check the files against the recorded sha256 manifest.
        download: False never downloads, even with ``pretrained=True`` (missing files are an
            error that says how to get them); Hub files then come from its cache only.
        hub_cache_dir: the Hugging Face cache (default ``HF_HUB_CACHE``).
        precision: ``fp32`` (default, exact), ``bf16``, ``fp16`` (autocast) or ``int8``
            (linear layers quantized, CPU only); see :mod:`dreamsim.precision`. The model's
            ``precision`` and ``weights_id`` name it.

    Returns:
        ``(model, preprocess)``.

    Example::

        >>> model, preprocess = dreamsim(pretrained=True)                # doctest: +SKIP
        >>> distance = model(preprocess(img_a), preprocess(img_b))       # doctest: +SKIP
    """
    variant = resolve_variant(dreamsim_type, use_patch_model)
    chosen = resolve_precision(dtype, precision)
    if cache_dir is not None and Path(cache_dir).suffix == ".safetensors":
        if not merge:
            raise ValueError("a merged .safetensors file has no LoRA layers to keep (merge=False)")
        return load_merged(
            cache_dir,
            device=device,
            normalize_embeds=normalize_embeds,
            precision=chosen,
            compile=compile,
            variant=variant,
        ), preprocess
    model = build_model(
        variant,
        cache_dir,
        tuned=pretrained,
        normalize_embeds=normalize_embeds,
        merge=merge,
        download=download,
        verify=verify,
        progress=progress,
        hub_cache_dir=hub_cache_dir,
    )
    if compile:
        for branch in model.extractor_list:
            branch.model = torch.compile(branch.model)
    model = model.to(device or default_device()).eval().requires_grad_(False)
    return with_precision(model, chosen), preprocess


def assemble(variant: Variant, located: Located, normalize_embeds: bool) -> DreamSim:
    """The untuned ``variant`` from the files ``located`` found, frozen, in eval mode."""
    branches = []
    for backbone, source in zip(variant.backbones, located.bases):
        state, proj = backbone_state(source, backbone)
        if backbone.feature == "embedding" and proj is None:
            raise CheckpointError(
                f"{source.path}: no projection, but {variant.name} takes the embedding "
                f"feature of {backbone.name}"
            )
        vit = build_vit(
            state, backbone.kind, variant.input_size[-1], str(source.path), backbone.head_dim
        )
        width = vit.cls_token.shape[-1]
        if backbone.feature == "embedding" and (proj.dim() != 2 or proj.shape[0] != width):
            raise CheckpointError(
                f"{source.path}: the projection {tuple(proj.shape)} does not take the "
                f"width {width} of the ViT"
            )
        branches.append(Branch(backbone, vit, proj, source))
    return DreamSim(variant, branches, normalize_embeds).eval().requires_grad_(False)


def build_model(
    variant: Variant,
    cache_dir: str | os.PathLike | None = None,
    *,
    tuned: bool,
    normalize_embeds: bool = True,
    merge: bool = True,
    download: bool = True,
    verify: bool = True,
    progress: bool | None = None,
    hub_cache_dir: str | os.PathLike | None = None,
) -> nn.Module:
    """``variant`` on CPU in eval mode: untuned, or with the tuned weights of ``cache_dir``
    (LoRA merged, or PEFT layers with ``merge=False``; or an MLP head). See :func:`dreamsim`."""
    located = locate(
        variant,
        cache_dir,
        tuned=tuned,
        download=download,
        verify=verify,
        progress=progress,
        hub_cache_dir=hub_cache_dir,
    )
    model = assemble(variant, located, normalize_embeds)
    tuning = located.tuning
    if tuning is not None and tuning.name == variant.mlp_head:
        model.mlp = read_mlp_head(tuning, model.features)
    elif tuning is not None and merge:
        merge_adapter(model, tuning)
    elif tuning is not None:
        model = wrap_with_peft(model, tuning)
    suffix = "-base" if tuning is None else "-mlp" if tuning.name == variant.mlp_head else "-lora"
    model.weights_id = located.weights_id + suffix
    return model.eval().requires_grad_(False)


def _read_merged(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """A merged file's metadata and tensors; CheckpointError for anything else."""
    from safetensors import safe_open

    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    tensors = read_tensors(path)
    with safe_open(str(path), framework="pt") as opened:
        metadata = opened.metadata() or {}
    if metadata.get("dreamsim_format") != MERGED_FORMAT:
        raise CheckpointError(
            f"{path}: not a merged DreamSim file (no dreamsim_format={MERGED_FORMAT} metadata); "
            f"write one with dreamsim.export(model, path, format='safetensors')"
        )
    for key, tensor in tensors.items():  # export writes finite float32 tensors only
        if tensor.dtype != torch.float32:
            raise CheckpointError(f"{path}: tensor {key} is {tensor.dtype}, not torch.float32")
        if not torch.isfinite(tensor).all():
            raise CheckpointError(f"{path}: tensor {key} holds NaN or infinite values")
    return metadata, tensors


def load_merged(
    path: str | os.PathLike,
    *,
    device: str | torch.device | None = None,
    normalize_embeds: bool | None = None,
    precision: str = "fp32",
    compile: bool = False,
    variant: Variant | None = None,
) -> DreamSim:
    """The model written by ``export(model, path, format="safetensors")``: same weights, same
    distances, no release files, no PEFT.

    Args:
        path: the ``.safetensors`` file.
        device: default CUDA, else MPS, else CPU.
        normalize_embeds: default: as the exported model did.
        precision: ``fp32``, ``bf16``, ``fp16`` or ``int8`` (see :func:`with_precision`).
        compile: ``torch.compile`` each backbone.
        variant: when given, the file must hold this variant.

    Returns:
        A :class:`~dreamsim.DreamSim` in eval mode, frozen.

    Example::

        >>> export(model, "ensemble.safetensors", format="safetensors")  # doctest: +SKIP
        >>> same = load_merged("ensemble.safetensors", device="cpu")      # doctest: +SKIP
    """
    path = Path(path)
    metadata, tensors = _read_merged(path)
    name = metadata.get("dreamsim_variant")
    if name not in VARIANTS:
        raise CheckpointError(f"{path}: unknown DreamSim variant {name!r} in its metadata")
    if variant is not None and variant.name != name:
        raise CheckpointError(f"{path} holds DreamSim {name}, not {variant.name}")
    branches = []
    size = VARIANTS[name].input_size[-1]
    for index, backbone in enumerate(VARIANTS[name].backbones):
        prefix = f"extractor_list.{index}."
        state = {
            key[len(prefix + "model.") :]: value
            for key, value in tensors.items()
            if key.startswith(prefix + "model.")
        }
        proj = tensors.get(prefix + "proj")
        vit = build_vit(state, backbone.kind, size, str(path), backbone.head_dim)
        width = vit.cls_token.shape[-1]
        if proj is not None and not proj.numel():
            proj = None  # export writes an empty one for a backbone without a projection
        if backbone.feature == "embedding" and proj is None:
            raise CheckpointError(f"{path}: no {prefix}proj, but {name} takes the embedding")
        if proj is not None and (proj.dim() != 2 or proj.shape[0] != width):
            raise CheckpointError(
                f"{path}: {prefix}proj has shape {list(proj.shape)}, not [{width}, D]"
            )
        branches.append(Branch(backbone, vit, proj))
    if normalize_embeds is None:
        normalize_embeds = metadata.get("dreamsim_normalize_embeds") == "true"
    model = DreamSim(VARIANTS[name], branches, normalize_embeds)
    try:
        if "mlp.fc1.weight" in tensors:
            hidden, features = tensors["mlp.fc1.weight"].shape
            model.mlp = MlpHead(features, hidden)
        model.load_state_dict(tensors, strict=True)
    except (RuntimeError, ValueError) as error:
        reason = str(error).strip().splitlines()[-1].strip()
        raise CheckpointError(f"{path}: tensors do not fit DreamSim {name} ({reason})") from None
    model.weights_id = metadata.get("dreamsim_weights_id", "")
    model = model.to(device or default_device()).eval().requires_grad_(False)
    model = with_precision(model, precision)
    if compile:
        for branch in model.extractor_list:
            branch.model = torch.compile(branch.model)
    return model


def _load_image(item) -> torch.Tensor:
    if isinstance(item, torch.Tensor):
        return preprocess_batch(item.unsqueeze(0) if item.dim() == 3 else item)[0]
    if not isinstance(item, Image.Image):
        with Image.open(item) as opened:
            return _to_tensor(opened)
    return _to_tensor(item)


@torch.inference_mode()
def embed_images(
    model: DreamSim, images: Iterable, batch_size: int = 32, progress: bool | None = None
) -> torch.Tensor:
    """Embeds PIL images, file paths or ``[3, H, W]`` tensors in batches; ``[N, D]`` on CPU."""
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    batch, outputs = [], []
    items = list(images) if not hasattr(images, "__len__") else images
    for item in tqdm(
        items, desc="embedding", unit="img", disable=None if progress is None else not progress
    ):
        batch.append(_load_image(item))
        if len(batch) == batch_size:
            outputs.append(model.embed(torch.stack(batch).to(device)).cpu())
            batch = []
    if batch:
        outputs.append(model.embed(torch.stack(batch).to(device)).cpu())
    return torch.cat(outputs) if outputs else torch.empty(0)
