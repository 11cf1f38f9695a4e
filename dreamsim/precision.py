"""Reduced precision on CPU and GPU, and how far it moves DreamSim's decisions from fp32.

Precisions (``model.precision`` says which one a model runs at; fp32 is the default and exact):

* ``fp32``: no autocast, no quantization: the numbers of :func:`~dreamsim.dreamsim` as always.
* ``bf16`` / ``fp16``: the backbones run under ``torch.autocast`` on the model's device (CPU
  too: oneDNN uses AVX512-BF16 / AMX where the CPU has them); embeddings come back as float32.
  On a CPU without native fp16 (most of them), fp16 is slower than fp32.
* ``int8``: every ``nn.Linear`` quantized with torch's dynamic int8 quantization (weights int8
  per tensor, activations quantized per batch; VNNI kernels on x86); CPU only. The patch
  embedding, the norms and the CLIP projection stay fp32.

A reduced precision is never silent: ``model.precision`` and ``model.weights_id`` (the key
of score caches) name it, and :func:`fidelity_report` measures what it changes on triplets:
the largest distance difference, the share of 2AFC decisions that flip, and the change of the
2AFC score against human votes.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from .errors import DreamSimError

PRECISIONS = ("fp32", "bf16", "fp16", "int8")
AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(dtype: torch.dtype | None = None, precision: str | None = None) -> str:
    """The precision named by ``dreamsim()``'s ``dtype`` (autocast dtype, upstream style) and
    ``precision`` (a name of :data:`PRECISIONS`), which must agree when both are given."""
    from_dtype = None
    if dtype is not None:
        names = {value: name for name, value in AUTOCAST_DTYPES.items() if value is not None}
        if dtype not in names:
            raise ValueError(
                f"dtype must be torch.bfloat16 or torch.float16 (or None for fp32), not {dtype}"
            )
        from_dtype = names[dtype]
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if from_dtype and precision and from_dtype != precision:
        raise ValueError(f"dtype={dtype} and precision={precision!r} disagree: give one of them")
    return precision or from_dtype or "fp32"


def with_precision(model: nn.Module, precision: str) -> nn.Module:
    """``model`` (a fp32 :class:`~dreamsim.DreamSim`) running at ``precision``; ``model`` itself
    is left as it is.

    fp32, bf16 and fp16 share the weights with ``model`` (a shallow copy whose autocast dtype
    differs); int8 holds its own quantized copy of the linear layers and runs on CPU only.

    Args:
        model: a DreamSim model at fp32 (LoRA merged: PEFT layers are not quantized).
        precision: ``fp32``, ``bf16``, ``fp16`` or ``int8``.

    Returns:
        The model at ``precision``.

    Example::

        >>> fast = with_precision(model, "int8")                        # doctest: +SKIP
        >>> fast.precision, fast(a, b)                                  # doctest: +SKIP
    """
    precision = resolve_precision(precision=precision)
    current = getattr(model, "precision", "fp32")
    if precision == current:
        return model
    # a DreamSim's class defines `precision`; a PEFT wrapper only forwards it to the model inside
    if not hasattr(type(model), "precision") or current == "int8":
        raise DreamSimError(
            f"precision {precision} needs a DreamSim with LoRA merged (merge=True) at fp32, "
            f"not a {type(model).__name__} at {current}"
        )
    if precision == "int8":
        return _quantize_int8(model)
    changed = copy.copy(model)
    changed.autocast_dtype = AUTOCAST_DTYPES[precision]
    return changed


def _quantize_int8(model: nn.Module) -> nn.Module:
    devices = {p.device.type for p in model.parameters()}
    if devices != {"cpu"}:
        raise DreamSimError(
            f"int8 runs on CPU only (torch's dynamic quantization), the model is on "
            f"{', '.join(sorted(devices))}: build it with device='cpu', or use bf16 on a GPU"
        )
    quantization = getattr(torch, "ao", None) and getattr(torch.ao, "quantization", None)
    if quantization is None or not hasattr(quantization, "quantize_dynamic"):
        raise DreamSimError(
            f"int8 needs torch.ao.quantization.quantize_dynamic, which torch "
            f"{torch.__version__} no longer has: use the ONNX Runtime backend "
            f"(dreamsim.onnxruntime_model(model, precision='int8'))"
        )
    with warnings.catch_warnings():
        # torch announces the move of this API to torchao; the kernels are the same, and the
        # fallback above says what to do once it is gone.
        warnings.filterwarnings("ignore", message="torch.ao.quantization is deprecated")
        warnings.filterwarnings("ignore", message="torch.quantize_per_tensor")
        quantized = quantization.quantize_dynamic(
            model, {nn.Linear}, dtype=torch.qint8, inplace=False
        )
    quantized.quantized = True
    return quantized


@dataclass(frozen=True)
class FidelityReport:
    """How a reduced-precision model's distances differ from fp32's on the same triplets.

    ``flipped`` counts triplets whose 2AFC decision (which side is closer to the reference:
    left, right or a tie) differs. The 2AFC scores use the BAPPS/NIGHTS convention (``p`` =
    share of votes for the right image; a tie scores 0.5) and are None without votes.
    """

    precision: str
    triplets: int
    max_abs_distance_difference: float
    mean_abs_distance_difference: float
    flipped: int
    flipped_share: float
    two_afc_reference: float | None
    two_afc_candidate: float | None
    two_afc_change: float | None

    def to_dict(self) -> dict:
        """The report as a JSON-ready dict (e.g. for an audit's ``summary.json``)."""
        return asdict(self)


def _two_afc(d_left: np.ndarray, d_right: np.ndarray, p_right: np.ndarray) -> float:
    per_triplet = (d_left < d_right) * (1 - p_right) + (d_right < d_left) * p_right
    return float(np.mean(per_triplet + (d_left == d_right) * 0.5))


def _as_array(values, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().float().cpu().numpy()
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name}: one distance per triplet expected, got shape {array.shape}")
    return array


def fidelity_report(
    reference: tuple,
    candidate: tuple,
    p_right=None,
    precision: str = "",
) -> FidelityReport:
    """Compares a candidate's distances with the fp32 reference's on the same triplets.

    Args:
        reference: ``(d_left, d_right)`` of the fp32 model, each ``[N]`` (arrays, lists or
            tensors): ``d(ref, left)`` and ``d(ref, right)`` per triplet.
        candidate: the same from the reduced-precision model (or another backend).
        p_right: per-triplet share of human votes for the right image (NIGHTS' ``right_vote``);
            None when there are no votes (the 2AFC fields are then None).
        precision: the candidate's name in the report (e.g. ``model.precision``).

    Returns:
        A :class:`FidelityReport`.

    Example::

        >>> report = fidelity_report(([0.2, 0.5], [0.3, 0.4]), ([0.2, 0.41], [0.3, 0.4]),
        ...                          p_right=[0.0, 1.0], precision="int8")
        >>> report.flipped, round(report.max_abs_distance_difference, 2), report.two_afc_change
        (1, 0.09, -1.0)
    """
    ref_left, ref_right = (_as_array(v, "reference") for v in reference)
    cand_left, cand_right = (_as_array(v, "candidate") for v in candidate)
    count = len(ref_left)
    if not count or {len(ref_right), len(cand_left), len(cand_right)} != {count}:
        raise ValueError(
            f"reference and candidate need the same number of triplets (at least one), got "
            f"{len(ref_left)}, {len(ref_right)}, {len(cand_left)}, {len(cand_right)}"
        )
    difference = np.abs(np.concatenate([cand_left - ref_left, cand_right - ref_right]))
    flips = int(np.sum(np.sign(ref_left - ref_right) != np.sign(cand_left - cand_right)))
    scores = (None, None, None)
    if p_right is not None:
        votes = _as_array(p_right, "p_right")
        if len(votes) != count:
            raise ValueError(f"p_right has {len(votes)} values for {count} triplets")
        before = _two_afc(ref_left, ref_right, votes)
        after = _two_afc(cand_left, cand_right, votes)
        scores = (before, after, after - before)
    return FidelityReport(
        precision,
        count,
        float(difference.max()),
        float(difference.mean()),
        flips,
        flips / count,
        *scores,
    )


@torch.inference_mode()
def triplet_distances(
    model, ref: torch.Tensor, left: torch.Tensor, right: torch.Tensor, batch_size: int = 32
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(d(ref, left), d(ref, right))`` per triplet, each image embedded once.

    Args:
        model: a :class:`~dreamsim.DreamSim` or :class:`~dreamsim.OnnxDreamSim`.
        ref, left, right: ``[N, 3, 224, 224]`` float images in [0, 1] (see ``preprocess``).
        batch_size: images per forward pass.

    Returns:
        Two ``[N]`` float32 tensors on CPU.
    """

    def embed(images: torch.Tensor) -> torch.Tensor:
        device = model.device
        return torch.cat([model.embed(part.to(device)).cpu() for part in images.split(batch_size)])

    anchor = embed(ref)
    return (
        model.distance_from_embeddings(anchor, embed(left)),
        model.distance_from_embeddings(anchor, embed(right)),
    )


def measure_fidelity(
    reference_model,
    candidate_model,
    ref: torch.Tensor,
    left: torch.Tensor,
    right: torch.Tensor,
    p_right=None,
    batch_size: int = 32,
) -> FidelityReport:
    """:func:`fidelity_report` of ``candidate_model`` against ``reference_model`` on triplets
    given as image tensors (e.g. the demo triplet through ``preprocess``).

    Example::

        >>> exact, _ = dreamsim(device="cpu")                           # doctest: +SKIP
        >>> measure_fidelity(exact, with_precision(exact, "bf16"), ref, a, b)  # doctest: +SKIP
    """
    return fidelity_report(
        triplet_distances(reference_model, ref, left, right, batch_size),
        triplet_distances(candidate_model, ref, left, right, batch_size),
        p_right,
        precision=getattr(candidate_model, "precision", ""),
    )
