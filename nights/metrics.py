"""Perceptual metrics behind one interface, and the agreement statistics of NIGHTS.

Two kinds of metric:

* :class:`PairMetric` compares two images at their native resolution (``ToTensor`` only, as
  upstream's PSNR/SSIM baselines): ``psnr``, ``ssim``, ``ms_ssim`` (torchmetrics).
* :class:`EmbeddingMetric` embeds each image once and compares embeddings: every DreamSim
  variant (``dreamsim``, ``dreamsim:dino_vitb16``, ``dreamsim:dino_vitb16_patch`` ...) and the
  untuned backbones (``baseline:dino_vitb16``, ``baseline:clip_vitb32`` ...).

Distances: higher means more different (PSNR is negated).

The 2AFC score (BAPPS/LPIPS convention, NIGHTS' ``p = right_vote``) with ``d0 = d(ref, left)``
and ``d1 = d(ref, right)``: mean of ``(d0 < d1)(1 - p) + (d1 < d0) p + (d0 == d1) 0.5``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

PAIR_METRICS = ("psnr", "ssim", "ms_ssim")
logger = logging.getLogger(__name__)


class Metric:
    """A named distance; ``cache_id`` identifies it and its weights in the score caches."""

    name: str
    cache_id: str


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
    """A DreamSim model (tuned or not): embeddings of 224 px images, cosine distance.

    A batch that runs out of device memory is embedded again in halves, and the halved size
    is kept for the rest of the run (``max_batch``); results do not depend on the batch size.
    """

    def __init__(self, name: str, model):
        self.name, self.model = name, model
        self.cache_id = f"{name}-{model.weights_id}-norm{int(model.normalize_embeds)}"
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


# -- agreement statistics --


def two_afc(d_left, d_right, p_right) -> np.ndarray:
    """Per-triplet 2AFC score; its mean is the 2AFC score of the metric."""
    d0, d1, p = (np.asarray(x, dtype=np.float64) for x in (d_left, d_right, p_right))
    return (d0 < d1) * (1 - p) + (d1 < d0) * p + (d0 == d1) * 0.5


def bootstrap_interval(
    values, rounds: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(rounds, len(values)))].mean(axis=1)
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def jnd_average_precision(distances, same) -> float:
    """LPIPS-style JND score: pairs sorted by increasing distance, precision/recall of "same"
    answers, VOC average precision (area under the interpolated precision-recall curve)."""
    order = np.argsort(np.asarray(distances, dtype=np.float64), kind="stable")
    same = np.asarray(same, dtype=np.float64)[order]
    if same.sum() == 0:
        return math.nan
    true_positive = np.cumsum(same)
    false_positive = np.cumsum(1 - same)
    recall = true_positive / same.sum()
    precision = true_positive / np.maximum(true_positive + false_positive, np.finfo(float).eps)
    recall = np.concatenate([[0.0], recall, [1.0]])
    precision = np.concatenate([[0.0], precision, [0.0]])
    for i in range(len(precision) - 2, -1, -1):
        precision[i] = max(precision[i], precision[i + 1])
    changes = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[changes + 1] - recall[changes]) * precision[changes + 1]))


def fit_vote_likelihood(margin, p_right, votes) -> dict:
    """Binomial log-likelihood of the vote counts under ``P(right) = sigmoid(k * margin)``.

    ``margin = d_left - d_right`` (positive: the right image is closer). ``k`` is fitted by
    maximum likelihood (Newton steps on a scalar). Returns ``k``, the mean log-likelihood per
    vote and that of a 50/50 guess, for comparison across metrics (Hepburn et al. 2024 argue
    for soft-label measures like this when vote counts vary).
    """
    margin = np.asarray(margin, dtype=np.float64)
    votes = np.asarray(votes, dtype=np.float64)
    right = np.round(np.asarray(p_right, dtype=np.float64) * votes)
    keep = votes > 0
    margin, votes, right = margin[keep], votes[keep], right[keep]
    if not len(votes):
        return {"k": math.nan, "log_likelihood_per_vote": math.nan, "chance": math.log(0.5)}
    scale = np.std(margin) or 1.0
    x = margin / scale
    k = 0.0
    for _ in range(50):
        q = 1 / (1 + np.exp(-k * x))
        gradient = np.sum(x * (right - votes * q))
        curvature = np.sum(votes * q * (1 - q) * x * x) + 1e-12
        step = gradient / curvature
        k += float(np.clip(step, -10, 10))
        if abs(step) < 1e-10:
            break
    q = np.clip(1 / (1 + np.exp(-k * x)), 1e-12, 1 - 1e-12)
    log_likelihood = np.sum(right * np.log(q) + (votes - right) * np.log(1 - q))
    return {
        "k": k / scale,
        "log_likelihood_per_vote": float(log_likelihood / votes.sum()),
        "chance": math.log(0.5),
    }
