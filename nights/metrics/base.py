"""What a metric is: a name, a cache id, an input size, a device, and one of two ways to measure.

* :class:`PairMetric` compares two image batches: ``distances(a, b) -> [B]``.
* :class:`EmbeddingMetric` embeds each image once (``embed_batch(images) -> [B, D]``) and
  compares embeddings (``distances``, cosine by default); the audit caches the embeddings, so
  an image shared by several triplets is embedded once.

Images reach a metric as float ``[B, 3, H, W]`` batches in [0, 1], resized to the metric's
``input_size`` first (a square PIL bicubic resize, as DreamSim preprocesses; None: each image
at its own resolution). Distances: higher means more different.
"""

from __future__ import annotations

import functools
import logging

from ..errors import MetricError

logger = logging.getLogger(__name__)


def checked_output(result, metric, what: str, rows: int, dims: int, dtype):
    """What a metric computed, as a CPU tensor of ``dtype``, once sure it has ``rows`` rows,
    ``dims`` dimensions and only finite real numbers: a wrong shape, NaN, an infinity or a
    complex number would otherwise reach the cache and the statistics as a silently wrong score.

    Raises:
        MetricError: naming the metric and what it returned, in one line.
    """
    import torch

    name = getattr(metric, "name", type(metric).__name__)
    try:
        tensor = torch.as_tensor(result)
    except (TypeError, ValueError, RuntimeError):
        raise MetricError(f"metric {name!r} returned {type(result).__name__}, not {what}") from None
    if tensor.dim() != dims or len(tensor) != rows or (rows and not tensor.numel()):
        raise MetricError(
            f"metric {name!r} returned shape {list(tensor.shape)} for a batch of {rows}, not {what}"
        )
    if tensor.is_complex():
        raise MetricError(f"metric {name!r} returned complex {what}, not real numbers")
    tensor = tensor.detach().cpu().to(dtype)
    bad = ~torch.isfinite(tensor)
    if bad.any():
        rows_bad = bad.reshape(len(tensor), -1).any(dim=1)
        raise MetricError(
            f"metric {name!r} returned NaN or infinite {what} for {int(rows_bad.sum())} of "
            f"{rows} (first at position {int(rows_bad.nonzero()[0])} of the batch)"
        )
    return tensor


def check_declared(name, input_size, cache_id) -> None:
    """A metric's name (one printable line), input size and cache id (None: to be derived),
    as the audit uses them.

    Raises:
        MetricError: naming the metric and what is wrong.
    """
    if not isinstance(name, str) or not name.strip() or not name.isprintable():
        raise MetricError(f"a metric needs a name (a non-empty line of text), not {name!r}")
    if input_size is not None and (
        isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 1
    ):
        raise MetricError(f"metric {name!r}: input_size must be a positive int or None")
    if cache_id is not None and (not isinstance(cache_id, str) or not cache_id):
        raise MetricError(f"metric {name!r}: cache_id must be a non-empty string")


class Metric:
    """A named distance between images.

    Attributes:
        name: what the audit calls it (``psnr``, ``dreamsim:ensemble``).
        cache_id: identifies the metric and its weights in the score caches: two metrics with
            the same cache id share cached scores.
        input_size: the side, in pixels, that images are resized to before scoring (DreamSim's
            bicubic resize); None scores them at their own resolution.
        device: where it runs (None: the CPU); the default batch size follows it.
    """

    name: str
    cache_id: str
    input_size: int | None = None
    device = None

    def __init_subclass__(cls, **kwargs):
        """Every ``distances`` a subclass defines is checked on the way out (shape, finite
        real numbers): the audit stores and ranks whatever it returns."""
        super().__init_subclass__(**kwargs)
        if "distances" in vars(cls):
            cls.distances = _checked_distances(cls.distances)


def _checked_distances(distances):
    @functools.wraps(distances)
    def checked(self, first, second):
        import torch

        result = distances(self, first, second)
        return checked_output(
            result, self, "[B] distances", len(first), dims=1, dtype=torch.float64
        )

    return checked


class PairMetric(Metric):
    """A metric that compares image pairs directly (subclasses give :meth:`distances`)."""

    def distances(self, a, b):
        """``[B]`` distances between image batches ``[B, 3, H, W]`` in [0, 1]."""
        raise NotImplementedError


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
    """A metric that embeds each image once and compares embeddings: subclasses give
    :meth:`embed_batch`; :meth:`distances` is the cosine distance unless they override it.

    A batch that runs out of device memory is embedded again in halves, and the halved size
    is kept for the rest of the run (``max_batch``); results do not depend on the batch size.
    """

    max_batch: int | None = None
    model = None
    _device = None

    @property
    def device(self):
        """Where it runs: the device given, else that of its ``model`` when it has one (its
        ``device``, as a DreamSim, an ONNX Runtime model or a transformers model say, else
        that of an ``nn.Module``'s parameters), else None (the CPU)."""
        if self._device is not None or self.model is None:
            return self._device
        device = getattr(self.model, "device", None)
        if device is None and hasattr(self.model, "parameters"):
            parameter = next(iter(self.model.parameters()), None)
            device = None if parameter is None else parameter.device
        return device

    @device.setter
    def device(self, value) -> None:
        self._device = value

    def embed_batch(self, images):
        """``[B, D]`` embeddings of ``[B, 3, H, W]`` images in [0, 1], on :attr:`device`."""
        raise NotImplementedError

    def embed(self, images):
        """Embeddings of a batch (float32, on the CPU), in chunks the device can hold."""
        import torch

        while True:
            size = min(self.max_batch or len(images), len(images))
            try:
                with torch.inference_mode():
                    parts = [
                        checked_output(
                            self.embed_batch(chunk.to(self.device or "cpu", non_blocking=True)),
                            self,
                            "[B, D] embeddings",
                            len(chunk),
                            dims=2,
                            dtype=torch.float32,
                        )
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
        """``1 - cos`` between two ``[B, D]`` embedding batches."""
        import torch

        return 1 - torch.nn.functional.cosine_similarity(embed_a, embed_b, dim=-1)
