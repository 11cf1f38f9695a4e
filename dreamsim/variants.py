"""The released DreamSim variants: which backbones, which feature, which files.

Facts from upstream's release (``dreamsim==0.2.1``): backbone order matters (the ensemble's
embedding is the concatenation in this order), and each variant is one zip of checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_RELEASE = "https://github.com/ssundaram21/dreamsim/releases/download"


@dataclass(frozen=True)
class Backbone:
    """One ViT of a variant: how its weights are stored and which feature it gives.

    ``kind`` selects the key mapping (``dino``, ``dinov2``, ``clip``, ``open_clip``,
    ``synclr``); ``feature`` is ``cls`` (token 0 of the last block, before the final norm),
    ``embedding`` (final norm on token 0, then the projection) or ``cls_patch`` (all tokens of
    the last block).
    """

    name: str
    kind: str
    feature: str
    checkpoint: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def _backbone(name: str, feature: str) -> Backbone:
    kind = name.rsplit("_", 1)[0]
    files = {
        "dino_vitb16": "dino_vitb16_pretrain.pth",
        "dinov2_vitb14": "dinov2_vitb14_pretrain.pth",
        "synclr_vitb16": "synclr_vit_b_16.pth",
    }
    checkpoint = files.get(name, f"{name}_pretrain.pth.tar")
    clip_like = kind in ("clip", "open_clip")
    return Backbone(
        name,
        kind,
        feature,
        checkpoint,
        CLIP_MEAN if clip_like else IMAGENET_MEAN,
        CLIP_STD if clip_like else IMAGENET_STD,
    )


@dataclass(frozen=True)
class Variant:
    name: str
    backbones: tuple[Backbone, ...]
    adapter: str  # folder holding adapter_config.json and adapter_model.safetensors
    url: str  # the official zip

    @property
    def is_patch(self) -> bool:
        return self.backbones[0].feature == "cls_patch"

    @property
    def files(self) -> tuple[str, ...]:
        return (*dict.fromkeys(b.checkpoint for b in self.backbones), self.adapter)


def _variant(name: str, backbones: list[tuple[str, str]], adapter: str, tag: str) -> Variant:
    return Variant(
        name,
        tuple(_backbone(n, f) for n, f in backbones),
        adapter,
        f"{_RELEASE}/{tag}/dreamsim_{name}_checkpoint.zip",
    )


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
    ]
}


def resolve_variant(dreamsim_type: str, use_patch_model: bool = False) -> Variant:
    """The variant upstream's ``dreamsim(dreamsim_type=..., use_patch_model=...)`` loads."""
    name = f"{dreamsim_type}_patch" if use_patch_model else dreamsim_type
    if name not in VARIANTS:
        if use_patch_model:
            raise ValueError(
                f"use_patch_model is available for dino_vitb16 and dinov2_vitb14, "
                f"not {dreamsim_type!r}"
            )
        raise ValueError(
            f"dreamsim_type must be one of "
            f"{', '.join(v for v in VARIANTS if not v.endswith('_patch'))}, "
            f"not {dreamsim_type!r}"
        )
    return VARIANTS[name]
