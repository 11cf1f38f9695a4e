"""Perceptual metrics behind one interface.

Two kinds of metric:

* :class:`PairMetric` compares two images at their native resolution (``ToTensor`` only, as
  upstream's PSNR/SSIM baselines): ``psnr``, ``ssim``, ``ms_ssim`` (torchmetrics).
* :class:`EmbeddingMetric` embeds each image once and compares embeddings: every DreamSim
  variant (``dreamsim``, ``dreamsim:dino_vitb16``, ``dreamsim:dino_vitb16_patch`` ...) and the
  untuned backbones (``baseline:dino_vitb16``, ``baseline:clip_vitb32`` ...).

Distances: higher means more different (PSNR is negated). Each metric declares what it takes:
``input_size`` (the side images are resized to first, as DreamSim preprocesses; None: their own
resolution) and ``device``; the audit (:mod:`nights.audit`) reads these, whatever the metric.

Example::

    >>> from nights.metrics import get_metric
    >>> psnr = get_metric("psnr")
    >>> psnr.name, psnr.cache_id, psnr.input_size, psnr.device
    ('psnr', 'psnr-v1', None, None)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

PAIR_METRICS = ("psnr", "ssim", "ms_ssim")
logger = logging.getLogger(__name__)


class Metric:
    """A named distance between images.

    Attributes:
        name: what the audit calls it (``psnr``, ``dreamsim:ensemble``).
        cache_id: identifies the metric and its weights in the score caches.
        input_size: the side, in pixels, that images are resized to before scoring (DreamSim's
            bicubic resize); None scores them at their own resolution.
        device: where it runs (None: the CPU); the default batch size follows it.
    """

    name: str
    cache_id: str
    input_size: int | None = None
    device = None


@dataclass
class PairMetric(Metric):
    name: str

    @property
    def cache_id(self) -> str:
        return f"{self.name}-v1"

    def distances(self, a, b):
        """``[B]`` distances between image batches ``[B, 3, H, W]`` in [0, 1]."""
        from torchmetrics.functional.image import (
            multiscale_structural_similarity_index_measure,
            peak_signal_noise_ratio,
            structural_similarity_index_measure,
        )

        if self.name == "psnr":
            return -peak_signal_noise_ratio(a, b, data_range=1.0, reduction="none", dim=(1, 2, 3))
        if self.name == "ssim":
            return 1 - structural_similarity_index_measure(a, b, data_range=1.0, reduction="none")
        if min(a.shape[-2:]) <= 160:
            raise ValueError(f"ms_ssim needs images larger than 160 px, not {tuple(a.shape[-2:])}")
        return 1 - multiscale_structural_similarity_index_measure(
            a, b, data_range=1.0, reduction="none"
        )


def batch_size_for(device) -> int:
    """Images per batch for embedding on ``device``: 32 on CPU and MPS; on CUDA by the card's
    memory (64 under 16 GiB, 128 under 40 GiB, 256 from 40 GiB: an H100 or A100-80GB)."""
    import torch

    device = torch.device(device or "cpu")
    if device.type != "cuda":
        return 32
    gib = torch.cuda.get_device_properties(device).total_memory / 2**30
    return 64 if gib < 16 else 128 if gib < 40 else 256


class EmbeddingMetric(Metric):
    """A DreamSim model (tuned or not): embeddings of images at the model's input size (224 px
    for every released variant), cosine distance.

    A batch that runs out of device memory is embedded again in halves, and the halved size
    is kept for the rest of the run (``max_batch``); results do not depend on the batch size.
    """

    def __init__(self, name: str, model):
        self.name, self.model = name, model
        self.cache_id = f"{name}-{model.weights_id}-norm{int(model.normalize_embeds)}"
        self.input_size = model.input_size[-1]
        self.max_batch: int | None = None

    @property
    def device(self):
        return next(self.model.parameters()).device

    def embed(self, images):
        import torch

        while True:
            size = min(self.max_batch or len(images), len(images))
            try:
                with torch.inference_mode():
                    parts = [
                        self.model.embed(chunk.to(self.device, non_blocking=True)).float().cpu()
                        for chunk in images.split(max(size, 1))
                    ]
                return torch.cat(parts)
            except RuntimeError as error:  # CUDA's OutOfMemoryError is one; MPS raises it plain
                if "out of memory" not in str(error) or size <= 1:
                    raise
                self.max_batch = size // 2
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                logger.warning(
                    "%s: out of device memory at %d images per batch; going on with %d",
                    self.name,
                    size,
                    self.max_batch,
                )

    def distances(self, embed_a, embed_b):
        import torch

        with torch.inference_mode():
            return self.model.distance_from_embeddings(embed_a, embed_b)


def get_metric(
    name: str, device: str | None = None, dtype=None, cache_dir: str | None = None
) -> Metric:
    """``psnr``, ``ssim``, ``ms_ssim``, ``dreamsim[:VARIANT]``, ``baseline:VARIANT``."""
    if name in PAIR_METRICS:
        return PairMetric(name)
    family, _, variant = name.partition(":")
    if family not in ("dreamsim", "baseline"):
        raise ValueError(
            f"unknown metric {name!r}: use one of {', '.join(PAIR_METRICS)}, "
            "dreamsim[:VARIANT] or baseline:VARIANT"
        )
    from dreamsim import dreamsim

    variant = variant or "ensemble"
    patch = variant.endswith("_patch")
    model, _ = dreamsim(
        pretrained=family == "dreamsim",
        device=device,
        cache_dir=cache_dir,
        dreamsim_type=variant.removesuffix("_patch"),
        use_patch_model=patch,
        dtype=dtype,
        download=False,
    )
    return EmbeddingMetric(f"{family}:{variant}", model)


def default_metric_names() -> list[str]:
    """DreamSim (the ensemble) when its weights are in ``$DREAMSIM_HOME``, else PSNR and SSIM:
    what an audit scores when no metric is named."""
    try:
        from dreamsim.errors import DreamSimError
        from dreamsim.variants import VARIANTS
        from dreamsim.weights import checkpoint_folder
    except ImportError:  # dreamsim's optional libraries are absent
        return ["psnr", "ssim"]
    try:
        checkpoint_folder(VARIANTS["ensemble"], None, download=False, verify=False)
    except DreamSimError:
        return ["psnr", "ssim"]
    return ["dreamsim"]
