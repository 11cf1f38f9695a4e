"""Random-weight checkpoints in the exact layout of DreamSim's release and of the Hugging
Face Hub (timm's and open_clip's layouts, in a Hub cache folder), and a reference forward pass
written from the spec with plain torch ops (no dreamsim, no timm).

The ViTs are narrow (width 128, two blocks; the test_tiny variant width 64 with two heads of
32) so that every variant builds in milliseconds; the file names, state-dict keys, wrappers
and adapter layout are those of the release.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

WIDTH, DEPTH, PROJ = 128, 2, 32  # two heads of 64, as ViT-B has twelve
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))

# kind, patch, grid of the stored position table, layer scale
BACKBONES = {
    "test_tiny": ("vit", 16, 14, False),
    "dinov2_vitl14": ("dinov2", 14, 37, True),
    "dino_vitb16": ("dino", 16, 14, False),
    "clip_vitb16": ("clip", 16, 14, False),
    "open_clip_vitb16": ("open_clip", 16, 14, False),
    "clip_vitb32": ("clip", 32, 7, False),
    "open_clip_vitb32": ("open_clip", 32, 7, False),
    "dinov2_vitb14": ("dinov2", 14, 37, True),
    "synclr_vitb16": ("synclr", 16, 14, False),
}
VARIANTS = {
    "ensemble": (
        [("dino_vitb16", "cls"), ("clip_vitb16", "embedding"), ("open_clip_vitb16", "embedding")],
        "ensemble_lora",
    ),
    "dino_vitb16": ([("dino_vitb16", "cls")], "dino_vitb16_single_lora"),
    "clip_vitb32": ([("clip_vitb32", "embedding")], "clip_vitb32_single_lora"),
    "open_clip_vitb32": ([("open_clip_vitb32", "embedding")], "open_clip_vitb32_single_lora"),
    "dinov2_vitb14": ([("dinov2_vitb14", "cls")], "dinov2_vitb14_single_lora"),
    "synclr_vitb16": ([("synclr_vitb16", "cls")], "synclr_vitb16_single_lora"),
    "dino_vitb16_patch": ([("dino_vitb16", "cls_patch")], "dino_vitb16_patch_lora"),
    "dinov2_vitb14_patch": ([("dinov2_vitb14", "cls_patch")], "dinov2_vitb14_patch_lora"),
    "test_tiny": ([("test_tiny", "cls")], "test_tiny_single_lora"),
}
HUB_VARIANTS = {"dinov2_vitl14": ([("dinov2_vitl14", "cls")], "dinov2_vitl14_single_lora")}
HEAD_DIM = {"test_tiny": 32}  # every other backbone: heads of 64
TINY_WIDTH = 64
FILES = {
    "dino_vitb16": "dino_vitb16_pretrain.pth",
    "dinov2_vitb14": "dinov2_vitb14_pretrain.pth",
    "synclr_vitb16": "synclr_vit_b_16.pth",
    "test_tiny": "test_tiny_pretrain.pth",
}


def _random_vit(
    generator: torch.Generator, name: str, width: int, depth: int, proj: int
) -> dict[str, torch.Tensor]:
    kind, patch, grid, layer_scale = BACKBONES[name]

    def randn(*shape, scale=0.02):
        return torch.randn(*shape, generator=generator) * scale

    state = {
        "cls_token": randn(1, 1, width, scale=0.5),
        "pos_embed": randn(1, 1 + grid * grid, width, scale=0.5),
        "patch_embed.proj.weight": randn(width, 3, patch, patch, scale=0.05),
        "patch_embed.proj.bias": (
            torch.zeros(width) if kind in ("clip", "open_clip") else randn(width)
        ),
        "norm.weight": 1 + randn(width, scale=0.1),
        "norm.bias": randn(width),
    }
    for block in range(depth):
        prefix = f"blocks.{block}."
        for norm in ("norm1", "norm2"):
            state[prefix + norm + ".weight"] = 1 + randn(width, scale=0.1)
            state[prefix + norm + ".bias"] = randn(width)
        shapes = {
            "attn.qkv": (3 * width, width),
            "attn.proj": (width, width),
            "mlp.fc1": (4 * width, width),
            "mlp.fc2": (width, 4 * width),
        }
        for layer, shape in shapes.items():
            state[f"{prefix}{layer}.weight"] = randn(*shape, scale=0.1)
            state[f"{prefix}{layer}.bias"] = randn(shape[0])
        if layer_scale:
            state[prefix + "ls1.gamma"] = 0.5 + randn(width, scale=0.1)
            state[prefix + "ls2.gamma"] = 0.5 + randn(width, scale=0.1)
    if kind in ("clip", "open_clip"):
        state["pos_drop.weight"] = 1 + randn(width, scale=0.1)
        state["pos_drop.bias"] = randn(width)
        state["proj"] = randn(width, proj, scale=0.2)
    if kind == "dinov2":
        state["mask_token"] = randn(1, width)
    return state


def write_release(
    folder: Path,
    variant: str,
    seed: int = 0,
    hub_dino: bool = False,
    lora_alpha: float = 8.0,
    rank: int = 4,
    width: int | None = None,
    depth: int = DEPTH,
    proj: int = PROJ,
    adapter: bool = True,
) -> dict:
    """Writes ``variant``'s files as the release lays them out; returns the weights used.

    ``width=768, depth=12, proj=512`` gives the released sizes (for benchmarks); the default
    width is 128 (64 for test_tiny). ``adapter=False`` writes the untuned backbones only.

    Returns ``{"backbones": [state dicts as the model must use them], "lora": {...}}``.
    """
    width = width or (TINY_WIDTH if variant == "test_tiny" else WIDTH)
    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    branches, adapter_folder = VARIANTS[variant]
    used = []
    for name, _ in branches:
        kind = BACKBONES[name][0]
        state = _random_vit(generator, name, width, depth, proj)
        path = folder / FILES.get(name, f"{name}_pretrain.pth.tar")
        if kind == "dino":
            student = _random_vit(generator, name, width, depth, proj)
            head = {"mlp.0.weight": torch.randn(8, width, generator=generator)}
            torch.save(
                {
                    "student": {
                        **{f"module.backbone.{k}": v for k, v in student.items()},
                        **{f"module.head.{k}": v for k, v in head.items()},
                    },
                    "teacher": {
                        **{f"backbone.{k}": v for k, v in state.items()},
                        **{f"head.{k}": v for k, v in head.items()},
                    },
                    "epoch": 100,
                },
                path,
            )
            if hub_dino:
                state = _random_vit(generator, name, width, depth, proj)
                (folder / "checkpoints").mkdir(exist_ok=True)
                torch.save(state, folder / "checkpoints" / "dino_vitbase16_pretrain.pth")
        elif kind in ("clip", "open_clip"):
            torch.save({"state_dict": state}, path)
        elif kind == "synclr":
            torch.save({"model": {f"module.visual.{k}": v for k, v in state.items()}}, path)
        else:
            torch.save(state, path)
        used.append(state)
    if not adapter:
        return {"backbones": used, "lora": {}, "scaling": 0.0}
    tensors = {}
    for index in range(len(branches)):
        for block in range(depth):
            key = f"base_model.model.extractor_list.{index}.model.blocks.{block}.attn.qkv"
            tensors[f"{key}.lora_A.weight"] = torch.randn(rank, width, generator=generator) * 0.1
            tensors[f"{key}.lora_B.weight"] = (
                torch.randn(3 * width, rank, generator=generator) * 0.1
            )
    (folder / adapter_folder).mkdir(exist_ok=True)
    config = {
        "r": rank,
        "lora_alpha": lora_alpha,
        "lora_dropout": 0.1,
        "bias": "none",
        "target_modules": ["qkv"],
        "peft_type": "LORA",
        "inference_mode": True,
    }
    (folder / adapter_folder / "adapter_config.json").write_text(json.dumps(config))
    save_file(tensors, str(folder / adapter_folder / "adapter_model.safetensors"))
    return {"backbones": used, "lora": tensors, "scaling": lora_alpha / rank}


# -- the reference computation, from the spec --


def _layer_norm(x, state, name, eps):
    return F.layer_norm(x, (x.shape[-1],), state[f"{name}.weight"], state[f"{name}.bias"], eps)


def _depth(state) -> int:
    return 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))


def reference_tokens(state, images, kind, qkv_deltas=None, head_dim=64):
    """Tokens after the last block, before the final norm, computed by hand."""
    mean, std = CLIP if kind in ("clip", "open_clip") else IMAGENET
    x = (images - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    patch = state["patch_embed.proj.weight"].shape[-1]
    x = F.conv2d(x, state["patch_embed.proj.weight"], state["patch_embed.proj.bias"], stride=patch)
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([state["cls_token"].expand(len(x), -1, -1), x], dim=1)
    pos = state["pos_embed"]
    stored, grid = math.isqrt(pos.shape[1] - 1), images.shape[-1] // patch
    if stored != grid:  # DINOv2's resampling: bicubic, scale (grid + 0.1) / stored
        table = pos[:, 1:].reshape(1, stored, stored, -1).permute(0, 3, 1, 2)
        table = F.interpolate(
            table, scale_factor=((grid + 0.1) / stored,) * 2, mode="bicubic", align_corners=False
        )
        pos = torch.cat([pos[:, :1], table.permute(0, 2, 3, 1).reshape(1, grid * grid, -1)], 1)
    x = x + pos
    eps = 1e-5 if kind in ("clip", "open_clip") else 1e-6
    if kind in ("clip", "open_clip"):
        x = _layer_norm(x, state, "pos_drop", eps)
    heads = max(1, x.shape[-1] // head_dim)
    for block in range(_depth(state)):
        prefix = f"blocks.{block}."
        h = _layer_norm(x, state, prefix + "norm1", eps)
        weight = state[prefix + "attn.qkv.weight"]
        if qkv_deltas is not None:
            weight = weight + qkv_deltas[block]
        qkv = F.linear(h, weight, state[prefix + "attn.qkv.bias"])
        b, t, _ = qkv.shape
        q, k, v = qkv.reshape(b, t, 3, heads, -1).permute(2, 0, 3, 1, 4)
        attention = torch.softmax(q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5, dim=-1)
        h = (attention @ v).transpose(1, 2).reshape(b, t, -1)
        h = F.linear(h, state[prefix + "attn.proj.weight"], state[prefix + "attn.proj.bias"])
        x = x + (h * state[prefix + "ls1.gamma"] if prefix + "ls1.gamma" in state else h)
        h = _layer_norm(x, state, prefix + "norm2", eps)
        h = F.linear(h, state[prefix + "mlp.fc1.weight"], state[prefix + "mlp.fc1.bias"])
        h = h * torch.sigmoid(1.702 * h) if kind == "clip" else F.gelu(h)
        h = F.linear(h, state[prefix + "mlp.fc2.weight"], state[prefix + "mlp.fc2.bias"])
        x = x + (h * state[prefix + "ls2.gamma"] if prefix + "ls2.gamma" in state else h)
    return x


def reference_embedding(weights: dict, variant: str, images, normalize: bool, lora: bool):
    parts = []
    branches = {**VARIANTS, **HUB_VARIANTS}[variant][0]
    for index, ((name, feature), state) in enumerate(zip(branches, weights["backbones"])):
        kind = BACKBONES[name][0]
        deltas = None
        if lora:
            key = "base_model.model.extractor_list.{}.model.blocks.{}.attn.qkv.lora_{}.weight"
            deltas = [
                weights["scaling"]
                * weights["lora"][key.format(index, block, "B")]
                @ weights["lora"][key.format(index, block, "A")]
                for block in range(_depth(state))
            ]
        tokens = reference_tokens(state, images, kind, deltas, HEAD_DIM.get(name, 64))
        if feature == "cls":
            parts.append(tokens[:, 0])
        elif feature == "embedding":
            parts.append(_layer_norm(tokens, state, "norm", 1e-5)[:, 0] @ state["proj"])
        else:
            parts.append(tokens)
    embedding = torch.cat(parts, dim=-1)
    if normalize:
        embedding = embedding - embedding.mean(dim=-1, keepdim=True)
        embedding = embedding / embedding.norm(dim=-1, keepdim=True)
    return embedding


def reference_distance(embed_a, embed_b, patch: bool):
    if patch:
        embed_a = torch.cat([embed_a[:, 0], embed_a[:, 1:].mean(1)], -1)
        embed_b = torch.cat([embed_b[:, 0], embed_b[:, 1:].mean(1)], -1)
    return 1 - (embed_a * embed_b).sum(-1) / (embed_a.norm(dim=-1) * embed_b.norm(dim=-1))


# -- the same networks as the Hugging Face Hub publishes them --


def random_backbone(name: str, seed: int = 0, width: int = WIDTH, depth: int = DEPTH) -> dict:
    """A random backbone in the release layout (pre-norm as ``pos_drop``, ``proj``)."""
    return _random_vit(torch.Generator().manual_seed(seed), name, width, depth, PROJ)


def timm_layout(state: dict) -> dict:
    """``state`` as timm's VisionTransformer names it: ``norm_pre``, no patch bias for
    pre-norm towers, the projection as ``head.weight`` (transposed) with a zero bias,
    DINOv2's ``mask_token`` dropped."""
    out = {}
    for key, value in state.items():
        if key.startswith("pos_drop."):
            out["norm_pre." + key.split(".", 1)[1]] = value
        elif key == "proj":
            out["head.weight"] = value.T.contiguous()
            out["head.bias"] = torch.zeros(value.shape[1])
        elif key != "mask_token":
            out[key] = value
    if "norm_pre.weight" in out:
        del out["patch_embed.proj.bias"]
    return out


_OPEN_CLIP = {
    "norm1": "ln_1",
    "norm2": "ln_2",
    "attn.qkv.weight": "attn.in_proj_weight",
    "attn.qkv.bias": "attn.in_proj_bias",
    "attn.proj": "attn.out_proj",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}


def open_clip_layout(state: dict) -> dict:
    """``state`` as open_clip names a CLIP model: the image tower under ``visual.``
    (``conv1``, ``class_embedding``, ``transformer.resblocks.N``...), plus a text tower."""
    out = {
        "visual.conv1.weight": state["patch_embed.proj.weight"],
        "visual.class_embedding": state["cls_token"].reshape(-1),
        "visual.positional_embedding": state["pos_embed"][0],
        "visual.ln_pre.weight": state["pos_drop.weight"],
        "visual.ln_pre.bias": state["pos_drop.bias"],
        "visual.ln_post.weight": state["norm.weight"],
        "visual.ln_post.bias": state["norm.bias"],
        "visual.proj": state["proj"],
        "token_embedding.weight": torch.zeros(10, 8),
        "positional_embedding": torch.zeros(7, 8),
        "text_projection": torch.zeros(8, PROJ),
        "logit_scale": torch.tensor(4.6),
    }
    for key, value in state.items():
        if key.startswith("blocks."):
            _, block, rest = key.split(".", 2)
            for ours, theirs in _OPEN_CLIP.items():
                if rest.startswith(ours):
                    rest = theirs + rest[len(ours) :]
                    break
            out[f"visual.transformer.resblocks.{block}.{rest}"] = value
    return out


def write_hub_cache(
    cache: Path, repo: str, filename: str, tensors: dict, revision: str = "main"
) -> Path:
    """Puts ``tensors`` into a Hugging Face cache folder as ``hf_hub_download`` leaves them:
    the blob named by its sha256, a snapshot link under the commit, ``refs/{revision}``.
    A ``.safetensors`` file holds safetensors, any other a torch pickle."""
    if filename.endswith(".safetensors"):
        data = save(tensors)
    else:
        buffer = io.BytesIO()
        torch.save(tensors, buffer)
        data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    commit = hashlib.sha1(repo.encode() + data).hexdigest()
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    (root / "blobs" / digest).write_bytes(data)
    snapshot = root / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(root / "blobs" / digest, snapshot), snapshot / filename)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / revision).write_text(commit)
    return snapshot / filename


def save(tensors: dict) -> bytes:
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in tensors.items()})
