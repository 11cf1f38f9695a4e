"""The ViT backbones, built on timm from the released state dicts, without torch.hub.

Every released backbone is a plain ViT; the checkpoints differ only in key names and a few
settings, mapped here (facts in upstream's release, checked numerically against it):

* DINO, SynCLR: LayerNorm eps 1e-6, exact GELU.
* DINOv2: as DINO plus LayerScale; its 37x37 position table (518 px) is resampled to the input
  grid the way DINOv2 does it: bicubic, ``scale_factor=(grid + 0.1) / 37``, no antialias.
* CLIP / OpenCLIP converted to DINO layout: ``pos_drop`` is CLIP's ``ln_pre`` (timm's
  ``norm_pre``), LayerNorm eps 1e-5, QuickGELU for OpenAI CLIP only, ``proj`` [D, 512] after
  the final norm.

Sizes (width, depth, patch, position grid) are read from the weights; heads = width / 64.
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn

from .errors import CheckpointError


def resample_position_table(pos_embed: torch.Tensor, grid: int) -> torch.Tensor:
    """A ``[1, 1 + g*g, D]`` table (class token first) resampled to ``grid x grid`` patches."""
    source = math.isqrt(pos_embed.shape[1] - 1)
    if source == grid:
        return pos_embed
    cls, patches = pos_embed[:, :1], pos_embed[:, 1:]
    dim = pos_embed.shape[-1]
    patches = patches.reshape(1, source, source, dim).permute(0, 3, 1, 2)
    scale = (grid + 0.1) / source
    patches = nn.functional.interpolate(
        patches.float(),
        scale_factor=(scale, scale),
        mode="bicubic",
        align_corners=False,
        antialias=False,
    )
    patches = patches.to(pos_embed.dtype).permute(0, 2, 3, 1).reshape(1, grid * grid, dim)
    return torch.cat([cls, patches], dim=1)


def build_vit(
    state: dict[str, torch.Tensor], kind: str, image_size: int = 224, where: str = ""
) -> nn.Module:
    """A timm VisionTransformer holding ``state`` (DINO-style keys, ``proj`` removed)."""
    from timm.layers import QuickGELU
    from timm.models.vision_transformer import VisionTransformer

    state = dict(state)
    try:
        dim = state["cls_token"].shape[-1]
        patch = state["patch_embed.proj.weight"].shape[-1]
        depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
        hidden = state["blocks.0.mlp.fc1.weight"].shape[0]
    except (KeyError, ValueError) as error:
        raise CheckpointError(f"{where}: not a ViT state dict (missing {error})") from None
    if image_size % patch:
        raise ValueError(f"image_size {image_size} is not a multiple of the patch size {patch}")
    clip_like = kind in ("clip", "open_clip")
    vit = VisionTransformer(
        img_size=image_size,
        patch_size=patch,
        embed_dim=dim,
        depth=depth,
        num_heads=max(1, dim // 64),
        mlp_ratio=hidden / dim,
        qkv_bias=True,
        init_values=1.0 if "blocks.0.ls1.gamma" in state else None,
        pre_norm=clip_like,
        num_classes=0,
        global_pool="token",
        norm_layer=partial(nn.LayerNorm, eps=1e-5 if clip_like else 1e-6),
        act_layer=QuickGELU if kind == "clip" else nn.GELU,
    )
    state.pop("mask_token", None)  # DINOv2's masked-token embedding, unused at inference
    if clip_like:
        state["norm_pre.weight"] = state.pop("pos_drop.weight")
        state["norm_pre.bias"] = state.pop("pos_drop.bias")
    bias = state.pop("patch_embed.proj.bias", None)
    if bias is not None and vit.patch_embed.proj.bias is None:
        vit.patch_embed.proj.bias = nn.Parameter(torch.zeros_like(bias))
    if bias is not None:
        state["patch_embed.proj.bias"] = bias
    state["pos_embed"] = resample_position_table(state["pos_embed"], image_size // patch)
    missing, unexpected = vit.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{where}: weights do not fit a {kind} ViT (missing "
            f"{sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})"
        )
    return vit.eval().requires_grad_(False)


def last_block_tokens(vit: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Tokens after the last block, before the final LayerNorm: ``[B, 1 + patches, D]``."""
    tokens = vit.patch_embed(images)
    tokens = vit._pos_embed(tokens)
    tokens = vit.norm_pre(tokens)
    return vit.blocks(tokens)
