"""The metrics that come with nights: PSNR, SSIM and MS-SSIM (torchmetrics, at each image's own
resolution, as upstream's baselines) and DreamSim, tuned or not (224 px embeddings)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ArgumentError, MetricError
from .base import EmbeddingMetric, PairMetric

PAIR_METRICS = ("psnr", "ssim", "ms_ssim")
# PSNR of identical images is infinite; capped here, far above that of any two 8-bit images
# that differ (under 130 dB up to 4096 px square), so that a distortion equal to its reference ranks
# closest instead of making the statistics NaN.
PSNR_CAP_DB = 200.0
# The version in each metric's cache id: psnr's changed with the cap (a cache may hold -inf).
VERSIONS = {"psnr": 2, "ssim": 1, "ms_ssim": 1}


@dataclass
class ImageQualityMetric(PairMetric):
    """``psnr`` (negated), ``ssim`` and ``ms_ssim`` (as ``1 - similarity``), from torchmetrics."""

    name: str

    @property
    def cache_id(self) -> str:
        return f"{self.name}-v{VERSIONS[self.name]}"

    def distances(self, a, b):
        from torchmetrics.functional.image import (
            multiscale_structural_similarity_index_measure,
            peak_signal_noise_ratio,
            structural_similarity_index_measure,
        )

        if self.name == "psnr":
            psnr = peak_signal_noise_ratio(a, b, data_range=1.0, reduction="none", dim=(1, 2, 3))
            return -psnr.clamp(max=PSNR_CAP_DB)
        if self.name == "ssim":
            return 1 - structural_similarity_index_measure(a, b, data_range=1.0, reduction="none")
        if min(a.shape[-2:]) <= 160:
            raise MetricError(f"ms_ssim needs images larger than 160 px, not {tuple(a.shape[-2:])}")
        return 1 - multiscale_structural_similarity_index_measure(
            a, b, data_range=1.0, reduction="none"
        )


BACKENDS = ("torch", "onnxruntime")


class DreamSimMetric(EmbeddingMetric):
    """A DreamSim model (tuned or not): embeddings at the model's input size (224 px for every
    released variant), cosine distance (patch variants: CLS and mean patch token, as
    DreamSim's own distance).

    Attributes:
        model: a :class:`dreamsim.DreamSim` at any precision, or a :class:`dreamsim.OnnxDreamSim`.
        precision / backend: what the model runs at (``model.precision``) and on (``torch`` or
            ``onnxruntime``).
        reference: the same weights at fp32 on torch, when the model is not that (its distances
            are then measured against the reference's: :mod:`nights.audit.fidelity`); else None.
    """

    def __init__(self, name: str, model, reference: DreamSimMetric | None = None):
        self.name, self.model, self.reference = name, model, reference
        self.cache_id = f"{name}-{model.weights_id}-norm{int(model.normalize_embeds)}"
        self.input_size = model.variant.input_size[-1]
        self.precision = getattr(model, "precision", "fp32")
        self.backend = "onnxruntime" if hasattr(model, "session") else "torch"

    def embed_batch(self, images):
        return self.model.embed(images)

    def distances(self, embed_a, embed_b):
        import torch

        with torch.inference_mode():
            return self.model.distance_from_embeddings(embed_a, embed_b)


def load_dreamsim(
    family: str,
    variant: str,
    device=None,
    dtype=None,
    cache_dir=None,
    precision: str | None = None,
    backend: str = "torch",
) -> DreamSimMetric:
    """``dreamsim:VARIANT`` (``family`` dreamsim, tuned) or ``baseline:VARIANT`` (the untuned
    backbones), from the weights in ``cache_dir`` (default ``$DREAMSIM_HOME``), at
    ``precision`` (or the autocast ``dtype``: see :func:`dreamsim.with_precision`) on
    ``backend`` (``onnxruntime``: fp32 or int8, on the CPU, through
    :func:`dreamsim.onnxruntime_model`). Anything but fp32 on torch carries its fp32
    ``reference``.

    Raises:
        DreamSimError: the weights are missing, or the precision cannot run there.
        ArgumentError: an unknown backend, or a precision it cannot run.
        ValueError: an unknown precision, or ``dtype`` and ``precision`` disagree (dreamsim's).
    """
    from dreamsim import dreamsim, onnxruntime_model, with_precision
    from dreamsim.precision import resolve_precision

    if backend not in BACKENDS:
        raise ArgumentError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    precision = resolve_precision(dtype, precision)
    if backend == "onnxruntime" and precision not in ("fp32", "int8"):
        raise ArgumentError(f"the onnxruntime backend runs fp32 or int8, not {precision}")
    exact, _ = dreamsim(
        pretrained=family == "dreamsim",
        device="cpu" if backend == "onnxruntime" else device,
        cache_dir=cache_dir,
        dreamsim_type=variant.removesuffix("_patch"),
        use_patch_model=variant.endswith("_patch"),
        download=False,
    )
    name = f"{family}:{variant}"
    if backend == "onnxruntime":
        model = onnxruntime_model(exact, precision)
    else:
        model = with_precision(exact, precision)
    return DreamSimMetric(name, model, None if model is exact else DreamSimMetric(name, exact))


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
