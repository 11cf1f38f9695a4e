"""The released LoRA adapters: read from ``adapter_config.json`` + ``adapter_model.safetensors``.

DreamSim's fine-tuning is LoRA on every ``attn.qkv`` only. For inference the deltas are merged
into the qkv weights (``W += scaling * B @ A``), which gives the same outputs without PEFT in
the forward pass; ``merge=False`` wraps the model with PEFT instead (for training).
The values of ``r``, ``lora_alpha`` and ``use_rslora`` are always read from the json.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn

from .errors import CheckpointError

_PREFIX = "base_model.model."


def read_adapter(folder: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """The adapter's config and its tensors keyed by module path (``...attn.qkv``)."""
    from safetensors.torch import load_file

    config_path, tensors_path = folder / "adapter_config.json", folder / "adapter_model.safetensors"
    for path in (config_path, tensors_path):
        if not path.is_file():
            raise CheckpointError(f"LoRA adapter file missing: {path}")
    try:
        config = json.loads(config_path.read_text())
        tensors = load_file(str(tensors_path))
    except (json.JSONDecodeError, OSError, Exception) as error:
        raise CheckpointError(f"{folder}: unreadable LoRA adapter ({error})") from None
    for key in ("r", "lora_alpha"):
        if key not in config:
            raise CheckpointError(f"{config_path}: no {key!r}")
    return config, tensors


def scaling(config: dict) -> float:
    """PEFT's LoRA scaling: alpha / r, or alpha / sqrt(r) with rsLoRA."""
    if config.get("use_rslora"):
        return config["lora_alpha"] / math.sqrt(config["r"])
    return config["lora_alpha"] / config["r"]


def merge_adapter(model: nn.Module, folder: Path) -> int:
    """Adds every LoRA delta to its qkv weight in place; returns how many layers changed."""
    config, tensors = read_adapter(folder)
    factor = scaling(config)
    modules = dict(model.named_modules())
    merged = 0
    for key, down in tensors.items():
        if not key.endswith(".lora_A.weight"):
            continue
        path = key[len(_PREFIX) : -len(".lora_A.weight")] if key.startswith(_PREFIX) else None
        up = tensors.get(key.replace(".lora_A.", ".lora_B."))
        layer = modules.get(path) if path else None
        if layer is None or up is None:
            raise CheckpointError(f"{folder}: adapter tensor {key} matches no layer of the model")
        with torch.no_grad():
            layer.weight += factor * (up.double() @ down.double()).to(layer.weight.dtype)
        merged += 1
    if not merged:
        raise CheckpointError(f"{folder}: the adapter holds no LoRA tensors")
    return merged


def wrap_with_peft(model: nn.Module, folder: Path) -> nn.Module:
    """The model with PEFT LoRA layers holding the adapter (unmerged; trainable if wanted)."""
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

    config, tensors = read_adapter(folder)
    fields = ("r", "lora_alpha", "lora_dropout", "bias", "target_modules", "use_rslora")
    wrapped = get_peft_model(model, LoraConfig(**{k: config[k] for k in fields if k in config}))
    result = set_peft_model_state_dict(wrapped, tensors)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise CheckpointError(f"{folder}: adapter tensors that fit no layer: {unexpected[:3]}")
    return wrapped.eval()
