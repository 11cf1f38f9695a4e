"""The released LoRA adapters: read from ``adapter_config.json`` + ``adapter_model.safetensors``.

DreamSim's fine-tuning is LoRA on every ``attn.qkv`` only. For inference the deltas are merged
into the qkv weights (``W += scaling * B @ A``), which gives the same outputs without PEFT in
the forward pass; ``merge=False`` wraps the model with PEFT instead. For training, LoRA layers
are injected into the model itself (``inject_lora``, ``load_lora``) and written back under
upstream's keys (``lora_tensors``, ``adapter_config``).
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
    problem = _config_problem(config)
    if problem:
        raise CheckpointError(f"{config_path}: {problem}")
    return config, tensors


def _config_problem(config) -> str | None:
    """What makes an adapter config unusable, or None."""
    if not isinstance(config, dict):
        return "not a JSON object"
    number = (int, float)
    checks = {
        "r": lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
        "lora_alpha": lambda v: isinstance(v, number) and not isinstance(v, bool),
        "lora_dropout": lambda v: isinstance(v, number) and 0 <= v < 1,
        "target_modules": lambda v: (
            isinstance(v, str) or (isinstance(v, list) and all(isinstance(m, str) for m in v))
        ),
        "bias": lambda v: v in ("none", "all", "lora_only"),
    }
    for key, fits in checks.items():
        if key in ("r", "lora_alpha") and key not in config:
            return f"no {key!r}"
        if key in config and not fits(config[key]):
            return f"{key!r} is {config[key]!r}"
    return None


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


def _peft_config(config: dict):
    """A peft ``LoraConfig`` from an adapter's json, reading only the fields that matter."""
    from peft import LoraConfig

    fields = ("r", "lora_alpha", "lora_dropout", "bias", "target_modules", "use_rslora")
    return LoraConfig(**{k: config[k] for k in fields if k in config})


def wrap_with_peft(model: nn.Module, folder: Path) -> nn.Module:
    """The model with PEFT LoRA layers holding the adapter (unmerged; trainable if wanted)."""
    from peft import get_peft_model, set_peft_model_state_dict

    config, tensors = read_adapter(folder)
    wrapped = get_peft_model(model, _peft_config(config))
    result = set_peft_model_state_dict(wrapped, tensors)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise CheckpointError(f"{folder}: adapter tensors that fit no layer: {unexpected[:3]}")
    return wrapped.eval()


# The fields peft has read for years (upstream's loader needs r, lora_alpha, lora_dropout,
# bias, target_modules and peft_type); newer fields are left out so that older peft
# versions, which refuse unknown ones, load the adapter too.
def adapter_config(r: int, alpha: float, dropout: float, target_modules) -> dict:
    """The ``adapter_config.json`` of a LoRA adapter as upstream's loader reads it."""
    return {
        "peft_type": "LORA",
        "task_type": None,
        "inference_mode": True,
        "r": r,
        "lora_alpha": alpha,
        "lora_dropout": dropout,
        "bias": "none",
        "target_modules": list(target_modules),
        "fan_in_fan_out": False,
        "init_lora_weights": True,
        "modules_to_save": None,
        "base_model_name_or_path": None,
        "revision": None,
    }


def inject_lora(model: nn.Module, config: dict) -> nn.Module:
    """Adds trainable PEFT LoRA layers to ``model`` in place (it keeps its type); with PEFT's
    initialisation (B = 0) the outputs are unchanged until training moves them."""
    from peft import inject_adapter_in_model

    return inject_adapter_in_model(_peft_config(config), model)


def load_lora(model: nn.Module, folder: Path) -> dict:
    """Injects the adapter of ``folder`` into ``model`` as trainable LoRA layers holding its
    weights (to continue training it); returns the adapter's config."""
    config, tensors = read_adapter(folder)
    try:
        inject_lora(model, config)
    except (ValueError, TypeError) as error:  # peft's refusals, e.g. no layer matches
        reason = str(error).strip().splitlines()[0]
        raise CheckpointError(f"{folder}: adapter does not fit the model ({reason})") from None
    parameters = dict(model.named_parameters())
    loaded = set()
    for key, value in tensors.items():
        name = key.removeprefix(_PREFIX).replace(".lora_A.", ".lora_A.default.")
        name = name.replace(".lora_B.", ".lora_B.default.")
        if name not in parameters or parameters[name].shape != value.shape:
            raise CheckpointError(f"{folder}: adapter tensor {key} fits no LoRA layer of the model")
        with torch.no_grad():
            parameters[name].copy_(value)
        loaded.add(name)
    missing = sorted(n for n in parameters if ".lora_" in n and n not in loaded)
    if missing:
        raise CheckpointError(f"{folder}: the adapter has no tensor for {missing[:3]}")
    return config


def lora_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's LoRA weights under upstream's keys
    (``base_model.model.extractor_list.{i}.model.blocks.{j}.attn.qkv.lora_{A,B}.weight``)."""
    return {
        _PREFIX + name.replace(".default.", "."): parameter.detach().float().cpu().contiguous()
        for name, parameter in model.named_parameters()
        if ".lora_A." in name or ".lora_B." in name
    }
