"""The metrics that come with nights: PSNR, SSIM and MS-SSIM (torchmetrics, at each image's own
resolution, as upstream's baselines) and DreamSim, tuned or not (224 px embeddings)."""

from __future__ import annotations

from dataclasses import dataclass

from .base import EmbeddingMetric, PairMetric

PAIR_METRICS = ("psnr", "ssim", "ms_ssim")


@dataclass
class ImageQualityMetric(PairMetric):
    """``psnr`` (negated), ``ssim`` and ``ms_ssim`` (as ``1 - similarity``), from torchmetrics."""

    name: str

    @property
    def cache_id(self) -> str:
        return f"{self.name}-v1"

    def distances(self, a, b):
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


class DreamSimMetric(EmbeddingMetric):
    """A DreamSim model (tuned or not): embeddings at the model's input size (224 px for every
    released variant), cosine distance (patch variants: CLS and mean patch token, as
    DreamSim's own distance)."""

    def __init__(self, name: str, model):
        self.name, self.model = name, model
        self.cache_id = f"{name}-{model.weights_id}-norm{int(model.normalize_embeds)}"
        self.input_size = model.input_size[-1]

    @property
    def device(self):
        return next(self.model.parameters()).device

    def embed_batch(self, images):
        return self.model.embed(images)

    def distances(self, embed_a, embed_b):
        import torch

        with torch.inference_mode():
            return self.model.distance_from_embeddings(embed_a, embed_b)


def load_dreamsim(
    family: str, variant: str, device=None, dtype=None, cache_dir=None
) -> DreamSimMetric:
    """``dreamsim:VARIANT`` (``family`` dreamsim, tuned) or ``baseline:VARIANT`` (the untuned
    backbones), from the weights in ``cache_dir`` (default ``$DREAMSIM_HOME``)."""
    from dreamsim import dreamsim

    model, _ = dreamsim(
        pretrained=family == "dreamsim",
        device=device,
        cache_dir=cache_dir,
        dreamsim_type=variant.removesuffix("_patch"),
        use_patch_model=variant.endswith("_patch"),
        dtype=dtype,
        download=False,
    )
    return DreamSimMetric(f"{family}:{variant}", model)


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
