"""The ViT backbones, built in plain torch from the released state dicts, without torch.hub.

Every released backbone is a plain ViT; the checkpoints differ only in key names and a few
settings, mapped here (facts in upstream's release, checked numerically against it):

* DINO, SynCLR: LayerNorm eps 1e-6, exact GELU.
* DINOv2: as DINO plus LayerScale; its 37x37 position table (518 px) is resampled to the input
  grid the way DINOv2 does it: bicubic, ``scale_factor=(grid + 0.1) / 37``, no antialias.
* CLIP / OpenCLIP converted to DINO layout: ``pos_drop`` is CLIP's ``ln_pre`` (timm's
  ``norm_pre``), LayerNorm eps 1e-5, QuickGELU for OpenAI CLIP only, ``proj`` [D, 512] after
  the final norm.

Parameter names follow the released (DINO / timm) keys, so the files load as they are.
Sizes (width, depth, patch, position grid) are read from the weights; heads = width / 64.
"""

from __future__ import annotations

import math

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


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch x patch`` convolution, flattened to ``[B, patches, D]``."""

    def __init__(self, dim: int, patch: int, bias: bool):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch, bias=bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(images).flatten(2).transpose(1, 2)


class QuickGELU(nn.Module):
    """OpenAI CLIP's activation: ``x * sigmoid(1.702 x)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class LayerScale(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Attention(nn.Module):
    """Multi-head self-attention with one fused ``qkv`` layer (the layer LoRA tunes)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.heads, dim // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        x = nn.functional.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(batch, tokens, dim))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, act: type[nn.Module]):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), act(), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + ls1(attn(norm1(x)))``, ``x + ls2(mlp(norm2(x)))``."""

    def __init__(self, dim, heads, hidden, eps, act, layer_scale):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads)
        self.ls1 = LayerScale(dim) if layer_scale else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, hidden, act)
        self.ls2 = LayerScale(dim) if layer_scale else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class VisionTransformer(nn.Module):
    """A plain ViT whose parameter names are the released (DINO-layout) state-dict keys."""

    def __init__(self, dim, depth, patch, grid, hidden, eps, act, layer_scale, pre_norm, bias):
        super().__init__()
        self.patch_embed = PatchEmbed(dim, patch, bias)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, dim))
        self.norm_pre = nn.LayerNorm(dim, eps=eps) if pre_norm else nn.Identity()
        heads = max(1, dim // 64)
        self.blocks = nn.Sequential(
            *(Block(dim, heads, hidden, eps, act, layer_scale) for _ in range(depth))
        )
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Tokens after the last block, before the final LayerNorm: ``[B, 1 + patches, D]``."""
        tokens = self.patch_embed(images)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        tokens = torch.cat([cls, tokens], dim=1) + self.pos_embed
        return self.blocks(self.norm_pre(tokens))


def build_vit(
    state: dict[str, torch.Tensor], kind: str, image_size: int = 224, where: str = ""
) -> VisionTransformer:
    """A :class:`VisionTransformer` holding ``state`` (DINO-style keys, ``proj`` removed)."""
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
    grid = image_size // patch
    vit = VisionTransformer(
        dim=dim,
        depth=depth,
        patch=patch,
        grid=grid,
        hidden=hidden,
        eps=1e-5 if clip_like else 1e-6,
        act=QuickGELU if kind == "clip" else nn.GELU,
        layer_scale="blocks.0.ls1.gamma" in state,
        pre_norm=clip_like,
        bias="patch_embed.proj.bias" in state,
    )
    state.pop("mask_token", None)  # DINOv2's masked-token embedding, unused at inference
    if clip_like:
        state["norm_pre.weight"] = state.pop("pos_drop.weight", None)
        state["norm_pre.bias"] = state.pop("pos_drop.bias", None)
    state["pos_embed"] = resample_position_table(state["pos_embed"], grid)
    try:
        missing, unexpected = vit.load_state_dict(
            {k: v for k, v in state.items() if v is not None}, strict=False
        )
    except RuntimeError as error:  # a tensor of the wrong shape
        reason = str(error).strip().splitlines()[-1].strip()
        raise CheckpointError(f"{where}: weights do not fit a {kind} ViT ({reason})") from None
    if missing or unexpected:
        raise CheckpointError(
            f"{where}: weights do not fit a {kind} ViT (missing "
            f"{sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})"
        )
    return vit.eval().requires_grad_(False)
