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
from .model import (
    DreamSim,
    dreamsim,
    embed_images,
    normalize_embedding,
    preprocess,
    preprocess_batch,
)
from .variants import VARIANTS

__all__ = [
    "VARIANTS",
    "CheckpointError",
    "DreamSim",
    "DreamSimError",
    "dreamsim",
    "embed_images",
    "normalize_embedding",
    "preprocess",
    "preprocess_batch",
]
