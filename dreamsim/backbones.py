"""The ViT backbones in plain torch, and the key maps that read every published layout.

Every backbone is a plain ViT; the files differ only in key names and a few settings, mapped
here beside the model they serve (facts from upstream's release and from timm's and
open_clip's model code, checked numerically against a forward pass written from the spec):

* DINO, SynCLR, DINOv2, the test ViT: LayerNorm eps 1e-6, exact GELU; DINOv2 adds
  LayerScale, and its 37x37 position table (518 px) is resampled to the input grid the way
  DINOv2 does it: bicubic, ``scale_factor=(grid + 0.1) / 37``, no antialias.
* CLIP / OpenCLIP: a LayerNorm before the blocks (CLIP's ``ln_pre``, timm's ``norm_pre``,
  upstream's ``pos_drop``), LayerNorm eps 1e-5, QuickGELU for OpenAI CLIP only, a projection
  ``proj`` [D, E] after the final norm.

Key maps turn a file's tensors into ``(state, proj)``: ``state`` keyed as this module's
:class:`VisionTransformer` (the DINO / timm names), ``proj`` the CLIP projection or None.
``release_to_vit`` reads upstream's release files, ``KEY_MAPS`` the Hub layouts (``timm``,
``open_clip``). Sizes (width, depth, patch, position grid) are read from the weights.
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

    def __init__(
        self, dim, depth, heads, patch, grid, hidden, eps, act, layer_scale, pre_norm, bias
    ):
        super().__init__()
        self.patch_embed = PatchEmbed(dim, patch, bias)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, dim))
        self.norm_pre = nn.LayerNorm(dim, eps=eps) if pre_norm else nn.Identity()
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


# kind: LayerNorm eps, MLP activation, LayerNorm before the blocks
_ARCHITECTURES: dict[str, tuple[float, type[nn.Module], bool]] = {
    "dino": (1e-6, nn.GELU, False),
    "dinov2": (1e-6, nn.GELU, False),
    "synclr": (1e-6, nn.GELU, False),
    "vit": (1e-6, nn.GELU, False),
    "clip": (1e-5, QuickGELU, True),
    "open_clip": (1e-5, nn.GELU, True),
}


def _strip(state: dict, prefix: str) -> dict:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def release_to_vit(saved: dict, kind: str, where: str) -> tuple[dict, torch.Tensor | None]:
    """``(state, proj)`` from one of upstream's release files, as ``torch.load`` gives it.

    DINO: the training checkpoint's TEACHER backbone (``teacher``, prefix ``backbone.``), or a
    plain backbone state dict (torch.hub's release file). CLIP / OpenCLIP: ``state_dict`` with
    ``pos_drop`` as the pre-norm and ``proj``. SynCLR: ``model`` with prefix ``module.visual.``.
    DINOv2 and the test ViT: a plain state dict (DINOv2's unused ``mask_token`` dropped).
    """
    if not isinstance(saved, dict):
        raise CheckpointError(f"{where}: not a state dict (a {type(saved).__name__})")
    if kind == "dino" and "teacher" in saved:
        return _strip(saved["teacher"], "backbone."), None
    if kind in ("clip", "open_clip"):
        state = dict(saved.get("state_dict", saved))
        if "proj" not in state:
            raise CheckpointError(f"{where}: no 'proj' tensor (not a CLIP-as-DINO checkpoint)")
        proj = state.pop("proj")
        for name in ("weight", "bias"):
            if f"pos_drop.{name}" in state:
                state[f"norm_pre.{name}"] = state.pop(f"pos_drop.{name}")
        return state, proj
    if kind == "synclr":
        return _strip(saved.get("model", saved), "module.visual."), None
    state = dict(saved)
    state.pop("mask_token", None)
    return state, None


def timm_to_vit(tensors: dict, where: str) -> tuple[dict, torch.Tensor | None]:
    """``(state, proj)`` from timm's ``VisionTransformer`` layout (``model.safetensors``).

    timm already names the tensors as this module does (``norm_pre`` for CLIP's pre-norm); its
    CLIP towers hold the projection as a classifier, ``head.weight`` = ``proj.T`` with a zero
    ``head.bias``.
    """
    state = dict(tensors)
    head, bias = state.pop("head.weight", None), state.pop("head.bias", None)
    if head is not None and head.dim() != 2:
        raise CheckpointError(f"{where}: head.weight is not a matrix {tuple(head.shape)}")
    if bias is not None and bias.numel() and bias.abs().max() > 0:
        raise CheckpointError(
            f"{where}: head.bias is not zero, so head is a classifier, not a CLIP projection"
        )
    return state, None if head is None else head.T.contiguous()


# open_clip's names -> ours, matched on whole dotted segments (a key gets a leading ".")
_OPEN_CLIP_NAMES = (
    (".conv1.", ".patch_embed.proj."),
    (".transformer.resblocks.", ".blocks."),
    (".ln_pre.", ".norm_pre."),
    (".ln_post.", ".norm."),
    (".ln_1.", ".norm1."),
    (".ln_2.", ".norm2."),
    (".ls_1.", ".ls1."),
    (".ls_2.", ".ls2."),
    (".attn.in_proj_weight", ".attn.qkv.weight"),
    (".attn.in_proj_bias", ".attn.qkv.bias"),
    (".attn.out_proj.", ".attn.proj."),
    (".mlp.c_fc.", ".mlp.fc1."),
    (".mlp.c_proj.", ".mlp.fc2."),
)


def open_clip_to_vit(tensors: dict, where: str) -> tuple[dict, torch.Tensor | None]:
    """``(state, proj)`` from open_clip's layout (``open_clip_model.safetensors``): the image
    tower under ``visual.``; the text tower is left out."""
    visual = _strip(tensors, "visual.")
    if not visual:
        raise CheckpointError(f"{where}: no visual.* tensors (not an open_clip checkpoint)")
    state, proj = {}, visual.pop("proj", None)
    for key, value in visual.items():
        if key == "class_embedding":
            state["cls_token"] = value.reshape(1, 1, -1)
        elif key == "positional_embedding":
            state["pos_embed"] = value.unsqueeze(0)
        else:
            dotted = "." + key
            for theirs, ours in _OPEN_CLIP_NAMES:
                dotted = dotted.replace(theirs, ours)
            state[dotted[1:]] = value
    return state, proj


KEY_MAPS = {"timm": timm_to_vit, "open_clip": open_clip_to_vit}

# layout: the key holding the projection, and whether it is stored transposed
_PROJECTION_KEYS = {"timm": ("head.weight", True), "open_clip": ("visual.proj", False)}


def with_projection(content: dict, layout: str, proj: torch.Tensor) -> dict:
    """``content`` (a file's tensors, or a release file as loaded) holding ``proj`` instead of
    its projection, in the file's own layout: the inverse of the key maps for that tensor."""
    proj = proj.detach().cpu().contiguous()
    if layout == "release":
        inner = dict(content.get("state_dict", content))
        inner["proj"] = proj
        return {**content, "state_dict": inner} if "state_dict" in content else inner
    key, transposed = _PROJECTION_KEYS[layout]
    return {**content, key: proj.T.contiguous() if transposed else proj}


def _sizes(state: dict, where: str) -> tuple[int, int, int, int]:
    """Width, patch, depth and MLP width read from the tensors, checked to be a ViT's."""
    try:
        cls, table = state["cls_token"], state["pos_embed"]
        weight = state["patch_embed.proj.weight"]
        blocks = {int(k.split(".")[1]) for k in state if k.startswith("blocks.")}
        hidden = state["blocks.0.mlp.fc1.weight"].shape[0]
    except (KeyError, ValueError, IndexError) as error:
        raise CheckpointError(f"{where}: not a ViT state dict (missing {error})") from None
    depth = len(blocks)
    # The depth is counted, not read from the largest index: one key named blocks.99999999
    # would otherwise build a ViT of 10^8 blocks and exhaust the memory.
    if blocks != set(range(depth)):
        gaps = sorted(set(range(max(blocks) + 1)) - blocks)[:5] if max(blocks) < 10**6 else []
        raise CheckpointError(
            f"{where}: not a ViT state dict (its blocks are not numbered 0 to {depth - 1}: "
            f"largest {max(blocks)}, missing {gaps})"
        )
    dim = cls.shape[-1] if cls.dim() else 0
    grid = math.isqrt(max(0, table.shape[1] - 1)) if table.dim() == 3 else 0
    fits = (
        dim > 0
        and hidden > 0
        and cls.shape == (1, 1, dim)
        and table.shape == (1, 1 + grid * grid, dim)
        and grid > 0
        and weight.dim() == 4
        and weight.shape[:2] == (dim, 3)
        and weight.shape[2] == weight.shape[3] > 0
    )
    if not fits:
        shapes = {k: tuple(state[k].shape) for k in ("cls_token", "pos_embed")}
        raise CheckpointError(
            f"{where}: not a ViT state dict (cls_token, pos_embed and patch_embed.proj.weight "
            f"do not agree: {shapes}, patch_embed.proj.weight {tuple(weight.shape)})"
        )
    return dim, weight.shape[-1], depth, hidden


def build_vit(
    state: dict[str, torch.Tensor],
    kind: str,
    image_size: int = 224,
    where: str = "",
    head_dim: int = 64,
) -> VisionTransformer:
    """A frozen :class:`VisionTransformer` holding ``state`` (this module's keys, no ``proj``).

    Raises:
        CheckpointError: the tensors do not fit a ViT of ``kind`` (naming ``where`` and the
            missing, unexpected or misshapen keys).
    """
    state = dict(state)
    dim, patch, depth, hidden = _sizes(state, where)
    if image_size % patch:
        raise CheckpointError(
            f"{where}: the image size {image_size} is not a multiple of its patch size {patch}"
        )
    eps, act, pre_norm = _ARCHITECTURES[kind]
    grid = image_size // patch
    vit = VisionTransformer(
        dim=dim,
        depth=depth,
        heads=max(1, dim // head_dim),
        patch=patch,
        grid=grid,
        hidden=hidden,
        eps=eps,
        act=act,
        layer_scale="blocks.0.ls1.gamma" in state,
        pre_norm=pre_norm,
        bias="patch_embed.proj.bias" in state,
    )
    state["pos_embed"] = resample_position_table(state["pos_embed"], grid)
    try:
        missing, unexpected = vit.load_state_dict(state, strict=False)
    except RuntimeError as error:  # a tensor of the wrong shape
        reason = str(error).strip().splitlines()[-1].strip()
        raise CheckpointError(f"{where}: weights do not fit a {kind} ViT ({reason})") from None
    if missing or unexpected:
        raise CheckpointError(
            f"{where}: weights do not fit a {kind} ViT (missing "
            f"{sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})"
        )
    return vit.eval().requires_grad_(False)
