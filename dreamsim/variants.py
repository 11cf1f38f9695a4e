"""The DreamSim variants: which backbones, which feature, where their weights live.

Facts from upstream's release (``dreamsim==0.2.1``): backbone order matters (the ensemble's
embedding is the concatenation in this order), and each released variant is one zip of
checkpoints. Every backbone that timm publishes on the Hugging Face Hub also names its Hub
repo, so its untuned weights can come from there; a new backbone is one entry in
``_BACKBONES`` and a new variant one line in ``VARIANTS``, not new code.

This module imports nothing heavy: ``import dreamsim.variants`` loads no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import VariantError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_RELEASE = "https://github.com/ssundaram21/dreamsim/releases/download"


@dataclass(frozen=True)
class HubWeights:
    """A backbone's weights in a Hugging Face Hub repo.

    ``layout`` names the key map that reads the file (see ``dreamsim.backbones.KEY_MAPS``):
    ``timm`` (timm's ``VisionTransformer``: ``norm_pre``, ``head.weight`` = projection
    transposed) or ``open_clip`` (``visual.conv1``, ``visual.transformer.resblocks.N``...).
    ``revision`` is a branch, tag or commit (None: ``main``). A ``.safetensors`` file is
    read as such; any other (``open_clip_pytorch_model.bin``) as a weights-only torch pickle.
    """

    repo: str
    layout: str = "timm"
    filename: str = "model.safetensors"
    revision: str | None = None


@dataclass(frozen=True)
class Backbone:
    """One ViT of a variant: where its weights are, how to read them, which feature it gives.

    ``kind`` sets the architecture and the release file's wrapping: ``dino``, ``dinov2``,
    ``synclr`` and ``vit`` (LayerNorm eps 1e-6, exact GELU), ``clip`` (pre-norm, eps 1e-5,
    QuickGELU), ``open_clip`` (pre-norm, eps 1e-5, exact GELU: upstream's choice).
    ``feature`` is ``cls`` (token 0 of the last block, before the final norm), ``embedding``
    (final norm on token 0, then the projection) or ``cls_patch`` (all tokens of the last
    block). ``checkpoint`` is the release file's name in ``cache_dir`` (None when the Hub is
    the only source); ``hub`` the same network on the Hugging Face Hub. Sizes are read from
    the weights; heads = width / ``head_dim``.
    """

    name: str
    kind: str
    feature: str
    checkpoint: str | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    hub: HubWeights | None = None
    head_dim: int = 64

    @property
    def hub_copy(self) -> str:
        """The name of the Hub file's copy in a saved model's folder."""
        suffix = "" if self.hub is None else "." + self.hub.filename.rsplit(".", 1)[-1]
        return f"{self.name}{suffix or '.safetensors'}"


def _open_clip_hub(repo: str) -> HubWeights:
    return HubWeights(repo, layout="open_clip", filename="open_clip_model.safetensors")


# name: (kind, release file, Hub weights, head_dim). OpenCLIP's laion400m_e31 repos hold
# open_clip's own layout (timm publishes only laion400m_e32 in its layout).
_BACKBONES: dict[str, tuple[str, str | None, HubWeights | None, int]] = {
    "dino_vitb16": (
        "dino",
        "dino_vitb16_pretrain.pth",
        HubWeights("timm/vit_base_patch16_224.dino"),
        64,
    ),
    "clip_vitb16": (
        "clip",
        "clip_vitb16_pretrain.pth.tar",
        HubWeights("timm/vit_base_patch16_clip_224.openai"),
        64,
    ),
    "clip_vitb32": (
        "clip",
        "clip_vitb32_pretrain.pth.tar",
        HubWeights("timm/vit_base_patch32_clip_224.openai"),
        64,
    ),
    "open_clip_vitb16": (
        "open_clip",
        "open_clip_vitb16_pretrain.pth.tar",
        _open_clip_hub("timm/vit_base_patch16_clip_224.laion400m_e31"),
        64,
    ),
    "open_clip_vitb32": (
        "open_clip",
        "open_clip_vitb32_pretrain.pth.tar",
        _open_clip_hub("timm/vit_base_patch32_clip_224.laion400m_e31"),
        64,
    ),
    "dinov2_vitb14": (
        "dinov2",
        "dinov2_vitb14_pretrain.pth",
        HubWeights("timm/vit_base_patch14_dinov2.lvd142m"),
        64,
    ),
    "dinov2_vitl14": ("dinov2", None, HubWeights("timm/vit_large_patch14_dinov2.lvd142m"), 64),
    "synclr_vitb16": ("synclr", "synclr_vit_b_16.pth", None, 64),
    # For tests: a ViT of width 64, depth 2, 2 heads, patch 16, whose random weights the
    # tests write in the release layout (a plain state dict), so that training runs on CPU.
    "test_tiny": ("vit", "test_tiny_pretrain.pth", None, 32),
}


def _backbone(name: str, feature: str) -> Backbone:
    kind, checkpoint, hub, head_dim = _BACKBONES[name]
    clip_like = kind in ("clip", "open_clip")
    return Backbone(
        name,
        kind,
        feature,
        checkpoint,
        CLIP_MEAN if clip_like else IMAGENET_MEAN,
        CLIP_STD if clip_like else IMAGENET_STD,
        hub,
        head_dim,
    )


@dataclass(frozen=True)
class Variant:
    """A DreamSim model: its backbones in order, its tuned weights, where to get them.

    ``url`` is the official zip (None: no release; the untuned backbones come from the Hub or
    from files written by a test, the tuned weights from training). ``sha256`` pins the zip
    where a published value exists. ``input_size`` is what the model takes (C, H, W).
    """

    name: str
    backbones: tuple[Backbone, ...]
    adapter: str  # folder holding adapter_config.json and adapter_model.safetensors
    url: str | None
    sha256: str | None = None
    input_size: tuple[int, int, int] = (3, 224, 224)

    @property
    def is_patch(self) -> bool:
        return self.backbones[0].feature == "cls_patch"

    @property
    def mlp_head(self) -> str:
        """The file holding an MLP head trained instead of LoRA (not part of any release)."""
        return self.adapter.removesuffix("_lora") + "_mlp.safetensors"

    @property
    def files(self) -> tuple[str, ...]:
        """The release's files: the backbones' checkpoints, then the adapter folder."""
        names = (b.checkpoint for b in self.backbones if b.checkpoint)
        return (*dict.fromkeys(names), self.adapter)


def _variant(
    name: str, backbones: list[tuple[str, str]], adapter: str, tag: str | None = None
) -> Variant:
    url = f"{_RELEASE}/{tag}/dreamsim_{name}_checkpoint.zip" if tag else None
    return Variant(name, tuple(_backbone(n, f) for n, f in backbones), adapter, url)


# No sha256 of the release zips is published (upstream's README, releases and issues, and
# the public material searched in November 2026); the zips are checked against
# the trust-on-first-use manifest instead (dreamsim.weights). Pin a value here once known.
VARIANTS: dict[str, Variant] = {
    variant.name: variant
    for variant in [
        _variant(
            "ensemble",
            [
                ("dino_vitb16", "cls"),
                ("clip_vitb16", "embedding"),
                ("open_clip_vitb16", "embedding"),
            ],
            "ensemble_lora",
            "v0.2.0-checkpoints",
        ),
        _variant(
            "dino_vitb16", [("dino_vitb16", "cls")], "dino_vitb16_single_lora", "v0.2.0-checkpoints"
        ),
        _variant(
            "clip_vitb32",
            [("clip_vitb32", "embedding")],
            "clip_vitb32_single_lora",
            "v0.2.0-checkpoints",
        ),
        _variant(
            "open_clip_vitb32",
            [("open_clip_vitb32", "embedding")],
            "open_clip_vitb32_single_lora",
            "v0.2.0-checkpoints",
        ),
        _variant(
            "dinov2_vitb14",
            [("dinov2_vitb14", "cls")],
            "dinov2_vitb14_single_lora",
            "v0.2.1-checkpoints",
        ),
        _variant(
            "synclr_vitb16",
            [("synclr_vitb16", "cls")],
            "synclr_vitb16_single_lora",
            "v0.2.1-checkpoints",
        ),
        _variant(
            "dino_vitb16_patch",
            [("dino_vitb16", "cls_patch")],
            "dino_vitb16_patch_lora",
            "v0.2.1-checkpoints",
        ),
        _variant(
            "dinov2_vitb14_patch",
            [("dinov2_vitb14", "cls_patch")],
            "dinov2_vitb14_patch_lora",
            "v0.2.1-checkpoints",
        ),
        _variant("dinov2_vitl14", [("dinov2_vitl14", "cls")], "dinov2_vitl14_single_lora"),
        _variant("test_tiny", [("test_tiny", "cls")], "test_tiny_single_lora"),
    ]
}


def resolve_variant(dreamsim_type: str, use_patch_model: bool = False) -> Variant:
    """The variant upstream's ``dreamsim(dreamsim_type=..., use_patch_model=...)`` loads.

    Raises:
        VariantError: an unknown name (the message lists the known ones).
    """
    name = f"{dreamsim_type}_patch" if use_patch_model else dreamsim_type
    if name not in VARIANTS:
        if use_patch_model:
            patched = [v.removesuffix("_patch") for v in VARIANTS if v.endswith("_patch")]
            raise VariantError(
                f"use_patch_model is available for {' and '.join(patched)}, not {dreamsim_type!r}"
            )
        raise VariantError(
            f"dreamsim_type must be one of "
            f"{', '.join(v for v in VARIANTS if not v.endswith('_patch'))}, "
            f"not {dreamsim_type!r}"
        )
    return VARIANTS[name]
