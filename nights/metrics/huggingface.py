"""Hugging Face vision models as metrics: ``hf:MODEL_ID_OR_FOLDER[:pooled|cls|mean]``.

The model comes from transformers' ``AutoModel`` and its image processor from
``AutoImageProcessor`` on the PIL path (``backend="pil"``: the fast processors need
torchvision), both from a folder written by ``save_pretrained`` or a Hub model id, read from
the Hugging Face cache (``HF_HUB_CACHE``) or downloaded; with ``HF_HUB_OFFLINE=1`` nothing is
downloaded (both read at each load, as :mod:`dreamsim.hub` reads them). The embedding
(distance: ``1 - cos``):

* ``pooled`` (default): the model's ``pooler_output`` (DINOv2: the layer-normed CLS token; a
  CLIP or SigLIP vision model: its pooled CLS or attention-pooled token); a checkpoint with a
  text tower beside the vision one (``CLIPModel``, ``SiglipModel``) gives its projected image
  features (``get_image_features``);
* ``cls``: the first token of ``last_hidden_state``;
* ``mean``: the mean of ``last_hidden_state`` over all its tokens.

How images are preprocessed: the audit resizes each image (square, PIL bicubic, antialiased, as
DreamSim preprocesses) to the metric's ``input_size``, the processor's ``crop_size`` when it
crops, else its ``size``; then the processor's rescaling and normalisation are applied to the
tensors: ``pixel = x * 255 * rescale_factor`` (``x * 255`` when ``do_rescale`` is off), then
``(pixel - image_mean) / image_std`` when ``do_normalize``. The processor's own resize (e.g.
the shortest edge to 256) and center crop are not applied: NIGHTS images are square, and a crop
would cut off their borders. On an image at the input size this equals the processor's output
with ``do_resize=False, do_center_crop=False`` (tested to 1e-6).

Cache id: ``hf:NAME:POOLING-`` and 16 hex digits of the sha256 of the model's class, its
configuration (without its path and transformers version), every tensor of its
``state_dict``, and the input size and normalisation: the same weights from another folder or
the Hub share cached scores; other weights do not.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import os
from pathlib import Path

from ..errors import MetricError
from .base import EmbeddingMetric
from .fingerprints import fingerprint

POOLINGS = ("pooled", "cls", "mean")
# The largest input side taken from a processor: a hostile one asking for a million pixels
# would have every image resized to terabytes.
MAX_INPUT_SIZE = 4096


def _side(size, key: str):
    return size.get(key) if isinstance(size, dict) else getattr(size, key, None)


def processor_input_size(processor, name: str) -> int:
    """The side of the square images the model is fed: the processor's crop size when it
    center-crops, else its size (``height``/``width`` or ``shortest_edge``)."""
    crops = getattr(processor, "do_center_crop", False) and processor.crop_size
    size = processor.crop_size if crops else processor.size
    height, width = _side(size, "height"), _side(size, "width")
    if height and height == width:
        side = height
    elif not height and _side(size, "shortest_edge"):
        side = _side(size, "shortest_edge")
    else:
        raise MetricError(
            f"{name}: its image processor makes {height}x{width} images; NIGHTS' images are square"
        )
    if isinstance(side, bool) or not isinstance(side, int) or not 1 <= side <= MAX_INPUT_SIZE:
        raise MetricError(
            f"{name}: its image processor's size {side!r} is not a side in pixels (1 to "
            f"{MAX_INPUT_SIZE}); fix preprocessor_config.json"
        )
    return side


def _normalisation(processor, name: str):
    """``(scale, mean, std)`` of the processor's rescaling and normalisation, once sure they
    are finite numbers for 1 or 3 channels and no standard deviation is 0."""
    import torch

    try:
        scale = 255 * float(processor.rescale_factor) if processor.do_rescale else 255.0
        mean, std = (
            (processor.image_mean, processor.image_std) if processor.do_normalize else (0.0, 1.0)
        )
        mean, std = (torch.as_tensor(v, dtype=torch.float32).reshape(-1) for v in (mean, std))
    except (AttributeError, TypeError, ValueError, RuntimeError) as error:
        raise MetricError(
            f"{name}: its image processor's rescale_factor, image_mean or image_std is not a "
            f"number ({' '.join(str(error).split())[:200]}); fix preprocessor_config.json"
        ) from None
    usable = (
        math.isfinite(scale)
        and scale > 0
        and all(len(v) in (1, 3) and torch.isfinite(v).all() for v in (mean, std))
        and (std != 0).all()
    )
    if not usable:
        raise MetricError(
            f"{name}: its image processor's rescale_factor {scale / 255!r}, image_mean "
            f"{mean.tolist()} or image_std {std.tolist()} cannot normalise RGB images (1 or 3 "
            "finite values, no std of 0); fix preprocessor_config.json"
        )
    channels = (1, -1, 1, 1)
    return scale, mean.reshape(channels), std.reshape(channels)


def _check_vision(model, name: str) -> None:
    """A model that takes no ``pixel_values`` (a text model) fails only once images reach it."""
    encode = getattr(model, "get_image_features", None) or model.forward
    if "pixel_values" not in inspect.signature(encode).parameters:
        raise MetricError(
            f"{name}: {type(model).__name__} is not a vision model (it takes no "
            "pixel_values); give an image model (DINOv2, CLIP, SigLIP, ViT ...)"
        )


class HuggingFaceMetric(EmbeddingMetric):
    """A transformers vision model: embeddings pooled as asked, cosine distance (see
    :mod:`nights.metrics.huggingface` for the preprocessing and the cache id)."""

    def __init__(self, model, processor, *, name: str, pooling: str = "pooled"):

        if pooling not in POOLINGS:
            raise MetricError(f"{name}: pooling must be one of {', '.join(POOLINGS)}")
        _check_vision(model, name)
        self.model, self.name, self.pooling = model.eval(), name, pooling
        self.input_size = processor_input_size(processor, name)
        self.scale, self.mean, self.std = _normalisation(processor, name)
        config = {
            key: value
            for key, value in model.config.to_dict().items()
            if not key.startswith("_") and key != "transformers_version"
        }
        digest = fingerprint(
            (
                type(model).__qualname__,
                config,
                model.state_dict(),
                pooling,
                self.input_size,
                self.scale,
                self.mean,
                self.std,
            )
        )
        self.cache_id = f"hf:{Path(name.removeprefix('hf:')).name}-{digest[:16]}"

    def pixel_values(self, images):
        """The processor's rescaling and normalisation of ``[B, 3, H, W]`` images in [0, 1]."""
        mean, std = self.mean.to(images.device), self.std.to(images.device)
        return (images * self.scale - mean) / std

    def embed_batch(self, images):
        pixel_values = self.pixel_values(images)
        encode = getattr(self.model, "get_image_features", None) or self.model
        outputs = encode(pixel_values=pixel_values)
        if self.pooling == "pooled":
            pooled = getattr(outputs, "pooler_output", None)
            if pooled is None:
                raise MetricError(f"{self.name}: the model has no pooled output; use :cls or :mean")
            return pooled.flatten(1)
        tokens = outputs.last_hidden_state
        return tokens[:, 0] if self.pooling == "cls" else tokens.mean(dim=1)


def _folder(source: str) -> Path | None:
    """``source`` as a folder (``~`` expanded), or None when it is not one (a name too long
    for the file system included)."""
    try:
        folder = Path(source).expanduser()
        return folder if folder.is_dir() else None
    except (OSError, RuntimeError):  # ENAMETOOLONG; RuntimeError: ~user of no such user
        return None


@contextlib.contextmanager
def _no_progress_bars():
    """transformers shows a bar while it loads weights; the audit shows its own."""
    from transformers.utils import logging

    shown = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            logging.enable_progress_bar()


def load_hf_metric(source: str, pooling: str = "pooled", device=None) -> HuggingFaceMetric:
    """``hf:SOURCE:POOLING``: a model folder or Hub model id, with its image processor.

    Raises:
        MetricError: not a folder nor a model id, transformers missing, or the model cannot
            be loaded (not in the cache while offline, no image processor, ...), in one line.
    """
    name = f"hf:{source}:{pooling}"
    folder = _folder(source)
    if folder is not None:
        source = str(folder)
    else:
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        try:
            validate_repo_id(source)
        except HFValidationError:
            raise MetricError(
                f"{name}: {source!r} is neither a folder nor a Hugging Face model id (OWNER/NAME)"
            ) from None
    try:
        import torch
        from transformers import AutoImageProcessor, AutoModel

        from dreamsim.hub import offline
    except ImportError as error:
        raise MetricError(f"{name} needs transformers and torch ({error})") from None
    where = {"cache_dir": os.environ.get("HF_HUB_CACHE") or None, "local_files_only": offline()}
    try:
        with _no_progress_bars():
            # transformers looks for a PEFT adapter without the two options: given again
            model = AutoModel.from_pretrained(source, **where, adapter_kwargs=dict(where))
            processor = AutoImageProcessor.from_pretrained(source, backend="pil", **where)
    except Exception as error:  # transformers' and the Hub's many kinds: all "cannot load"
        reason = " ".join(str(error).split())[:300]
        hint = (
            "; HF_HUB_OFFLINE is set: fetch it where there is a network (`hf download "
            f"{source}`) or give a folder written by save_pretrained"
            if where["local_files_only"] and folder is None
            else ""
        )
        raise MetricError(f"{name}: cannot load the model ({reason}){hint}") from None
    model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return HuggingFaceMetric(model, processor, name=name, pooling=pooling)
