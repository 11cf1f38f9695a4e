"""Perceptual metrics behind one interface: built in, from a function, a plugin or the Hub.

A metric is a :class:`Metric` of one of two kinds (:mod:`nights.metrics.base`):

* :class:`PairMetric` compares two images: ``distances(a, b) -> [B]``. Built in: ``psnr``,
  ``ssim``, ``ms_ssim`` (torchmetrics, at the images' own resolution, as upstream's baselines).
* :class:`EmbeddingMetric` embeds each image once and compares embeddings (cosine distance by
  default): every DreamSim variant (``dreamsim``, ``dreamsim:dino_vitb16``,
  ``dreamsim:dino_vitb16_patch`` ...), the untuned backbones (``baseline:dino_vitb16`` ...) and
  Hugging Face vision models (``hf:facebook/dinov2-small``, :mod:`nights.metrics.huggingface`).

Your own: :func:`pair_metric` wraps a function ``f(a, b) -> [B]``, :func:`embedding_metric`
one ``g(x) -> [B, D]`` (each with a name, an input size and a cache id, given or derived from
the function's code and weights: :mod:`nights.metrics.functions`); or subclass
:class:`PairMetric` / :class:`EmbeddingMetric`. An installed package can add names to
``--metric`` through the ``nights.metrics`` entry points (:mod:`nights.metrics.registry`).

Distances: higher means more different (PSNR is negated). Each metric declares what it takes:
``input_size`` (the side images are resized to first, as DreamSim preprocesses; None: their own
resolution) and ``device``; the audit (:mod:`nights.audit`) reads these, whatever the metric.

Example::

    >>> from nights.metrics import get_metric
    >>> psnr = get_metric("psnr")
    >>> psnr.name, psnr.cache_id, psnr.input_size, psnr.device
    ('psnr', 'psnr-v2', None, None)
"""

from .base import EmbeddingMetric, Metric, PairMetric, batch_size_for
from .builtin import PAIR_METRICS, DreamSimMetric, ImageQualityMetric, default_metric_names
from .fingerprints import fingerprint
from .functions import FunctionEmbeddingMetric, FunctionPairMetric, embedding_metric, pair_metric
from .huggingface import HuggingFaceMetric, load_hf_metric
from .registry import (
    ENTRY_POINTS,
    MetricSpec,
    as_metric,
    get_metric,
    metric_plugins,
    parse_metric_spec,
)

__all__ = [
    "ENTRY_POINTS",
    "PAIR_METRICS",
    "DreamSimMetric",
    "EmbeddingMetric",
    "FunctionEmbeddingMetric",
    "FunctionPairMetric",
    "HuggingFaceMetric",
    "ImageQualityMetric",
    "Metric",
    "MetricSpec",
    "PairMetric",
    "as_metric",
    "batch_size_for",
    "default_metric_names",
    "embedding_metric",
    "fingerprint",
    "get_metric",
    "load_hf_metric",
    "metric_plugins",
    "pair_metric",
    "parse_metric_spec",
]
