"""DreamSim, reimplemented: a drop-in for the upstream ``dreamsim`` package.

Same call, same numbers; the backbones are plain-torch ViTs built from the released files,
with no torch.hub and no network access once the files are present. Optional libraries
(peft, safetensors) load only when a model is built. This package never imports ``nights``.

Example::

    >>> from dreamsim import dreamsim
    >>> model, preprocess = dreamsim(pretrained=True, device="cpu")     # doctest: +SKIP
    >>> model(preprocess(img_a), preprocess(img_b))                     # doctest: +SKIP
"""

from .errors import CheckpointError, DreamSimError
from .exporter import OnnxDreamSim, export, load_merged, onnxruntime_model
from .model import (
    DreamSim,
    dreamsim,
    embed_images,
    embedding_distance,
    normalize_embedding,
    preprocess,
    preprocess_batch,
)
from .precision import (
    PRECISIONS,
    FidelityReport,
    fidelity_report,
    measure_fidelity,
    triplet_distances,
    with_precision,
)
from .variants import VARIANTS

__all__ = [
    "PRECISIONS",
    "VARIANTS",
    "CheckpointError",
    "DreamSim",
    "DreamSimError",
    "FidelityReport",
    "OnnxDreamSim",
    "dreamsim",
    "embed_images",
    "embedding_distance",
    "export",
    "fidelity_report",
    "load_merged",
    "measure_fidelity",
    "normalize_embedding",
    "onnxruntime_model",
    "preprocess",
    "preprocess_batch",
    "triplet_distances",
    "with_precision",
]
