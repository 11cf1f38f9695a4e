"""DreamSim, reimplemented: a drop-in for the upstream ``dreamsim`` package, trainable.

Same call, same numbers; the backbones are plain-torch ViTs built from the released files or
from timm's Hugging Face Hub repos, with no torch.hub and no network access once the files are
present. ``import dreamsim`` (and ``dreamsim.errors``) loads no torch: the model code loads on
first use of a name below. This package never imports ``nights``.

Example::

    >>> from dreamsim import dreamsim
    >>> model, preprocess = dreamsim(pretrained=True, device="cpu")     # doctest: +SKIP
    >>> model(preprocess(img_a), preprocess(img_b))                     # doctest: +SKIP
"""

import importlib
import warnings

from ._coexistence import upstream_conflict
from .errors import CheckpointError, DreamSimError, VariantError
from .variants import VARIANTS

_LAZY = {
    "DreamSim": "model",
    "MlpHead": "model",
    "dreamsim": "model",
    "embed_images": "model",
    "embedding_distance": "model",
    "normalize_embedding": "model",
    "preprocess": "model",
    "preprocess_batch": "model",
    "LoraSettings": "training",
    "save_pretrained": "training",
    "trainable_parameters": "training",
    "training_model": "training",
    "write_tiny_weights": "synthetic",
    "PRECISIONS": "precision",
    "FidelityReport": "precision",
    "fidelity_report": "precision",
    "measure_fidelity": "precision",
    "triplet_distances": "precision",
    "with_precision": "precision",
    "OnnxDreamSim": "exporter",
    "export": "exporter",
    "load_merged": "model",
    "onnxruntime_model": "exporter",
}

__all__ = ["VARIANTS", "CheckpointError", "DreamSimError", "VariantError", *_LAZY]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'dreamsim' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


_conflict = upstream_conflict()
if _conflict:
    warnings.warn(_conflict, stacklevel=2)
