"""Metrics from plain functions: :func:`pair_metric` and :func:`embedding_metric`.

The function sees what every metric sees: float ``[B, 3, H, W]`` batches in [0, 1], resized
to ``input_size`` first (a square PIL bicubic resize, as DreamSim preprocesses; None: each
image at its own resolution), on the metric's device, under ``torch.inference_mode()``.

The cache id: the one given, else ``NAME-`` and 16 hex digits of the
:func:`~nights.metrics.fingerprints.fingerprint` of ``(kind, input_size, function)``: its
bytecode, closure values, the globals it names and, for a ``torch.nn.Module`` (or a method of
one), its ``state_dict`` tensors' bytes (the full list is in :mod:`nights.metrics.fingerprints`).
Two functions with the same name share cached scores only when their cache ids are equal:
when given the same ``cache_id``, or when nothing their fingerprint takes in differs.
"""

from __future__ import annotations

import functools
import sys

from ..errors import MetricError
from .base import EmbeddingMetric, PairMetric, check_declared
from .fingerprints import fingerprint


def _home_module(function) -> str | None:
    """The module a function was written in (a partial's or a bound method's function's)."""
    while isinstance(function, functools.partial):
        function = function.func
    return getattr(function, "__module__", None)


def _device_of(function):
    """The device of a ``torch.nn.Module``'s (or its method's) parameters; None otherwise."""
    torch = sys.modules.get("torch")
    owner = getattr(function, "__self__", function)
    if torch is None or not isinstance(owner, torch.nn.Module):
        return None
    parameter = next(owner.parameters(), None)
    return None if parameter is None else parameter.device


def derived_cache_id(name: str, kind: str, function, input_size: int | None) -> str:
    """``NAME-`` and 16 hex digits of the fingerprint of ``(kind, input_size, function)``.

    Raises:
        MetricError: the function uses something that has no fingerprint (give a cache id).
    """
    try:
        digest = fingerprint((kind, input_size, function), home=_home_module(function))
    except Exception as error:  # a fingerprint reads arbitrary objects: any failure is ours
        reason = " ".join(str(error).split())
        raise MetricError(
            f"metric {name!r}: no cache id can be derived from its function ({reason}); "
            "give one: cache_id='...'"
        ) from None
    return f"{name}-{digest[:16]}"


def _check(function, name, input_size, cache_id) -> None:
    check_declared(name, input_size, cache_id)
    if not callable(function):
        raise MetricError(f"metric {name!r}: {type(function).__name__} is not a function")


class FunctionPairMetric(PairMetric):
    """A :class:`~nights.metrics.PairMetric` that calls ``function(a, b) -> [B]``."""

    def __init__(self, function, *, name, input_size=None, cache_id=None, device=None):
        _check(function, name, input_size, cache_id)
        self.function, self.name, self.input_size = function, name, input_size
        self.device = device if device is not None else _device_of(function)
        self.cache_id = cache_id or derived_cache_id(name, "pair", function, input_size)

    def distances(self, a, b):
        import torch

        with torch.inference_mode():
            device = self.device or "cpu"
            return self.function(a.to(device), b.to(device))

    def __repr__(self) -> str:
        return f"pair_metric({self.name!r}, cache_id={self.cache_id!r})"


class FunctionEmbeddingMetric(EmbeddingMetric):
    """An :class:`~nights.metrics.EmbeddingMetric` that calls ``function(x) -> [B, D]``."""

    def __init__(self, function, *, name, input_size=None, cache_id=None, device=None):
        _check(function, name, input_size, cache_id)
        self.function, self.name, self.input_size = function, name, input_size
        self.device = device if device is not None else _device_of(function)
        self.cache_id = cache_id or derived_cache_id(name, "embedding", function, input_size)

    def embed_batch(self, images):
        return self.function(images)

    def __repr__(self) -> str:
        return f"embedding_metric({self.name!r}, cache_id={self.cache_id!r})"


def pair_metric(
    function,
    *,
    name: str,
    input_size: int | None = None,
    cache_id: str | None = None,
    device=None,
) -> FunctionPairMetric:
    """A metric from a pair function ``function(a, b) -> [B]`` distances (higher: more
    different) over ``[B, 3, H, W]`` image batches in [0, 1].

    Args:
        function: any callable (a function, a ``torch.nn.Module``, a bound method).
        name: what the audit calls it.
        input_size: the side images are resized to first (None: their own resolution).
        cache_id: its id in the score cache (default: derived from the function, see
            :mod:`nights.metrics.functions`).
        device: where the images are sent (default: that of the module's parameters when
            ``function`` is a ``torch.nn.Module`` or its method, else the CPU).

    Returns:
        A :class:`~nights.metrics.PairMetric` for :func:`nights.audit.run_audit`.

    Raises:
        MetricError: no name, not callable, a bad input size, or no cache id derivable.

    Example::

        >>> from nights.audit import run_audit
        >>> from nights.metrics import pair_metric
        >>> def mean_abs_difference(a, b):
        ...     return (a - b).abs().mean(dim=(1, 2, 3))
        >>> l1 = pair_metric(mean_abs_difference, name="l1", input_size=32)
        >>> l1.cache_id
        'l1-...'
        >>> result = run_audit([l1, "psnr"], root=sample_root, out=scratch / "audit",
        ...                    cache=scratch / "scores.sqlite", num_workers=0, report=False,
        ...                    progress=False)
        >>> 0.5 < result.summary["metrics"]["l1"]["overall"]["two_afc"] <= 1
        True
    """
    return FunctionPairMetric(
        function, name=name, input_size=input_size, cache_id=cache_id, device=device
    )


def embedding_metric(
    function,
    *,
    name: str,
    input_size: int | None = None,
    cache_id: str | None = None,
    device=None,
) -> FunctionEmbeddingMetric:
    """A metric from an embedding function ``function(x) -> [B, D]`` over ``[B, 3, H, W]``
    image batches in [0, 1]; the distance is ``1 - cos`` between embeddings. Each distinct
    image is embedded once and its embedding cached.

    Args: as :func:`pair_metric`.

    Returns:
        An :class:`~nights.metrics.EmbeddingMetric` for :func:`nights.audit.run_audit`.

    Raises:
        MetricError: as :func:`pair_metric`.

    Example::

        >>> import torch
        >>> from nights.audit import run_audit
        >>> from nights.metrics import embedding_metric
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> network = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 4, stride=4), torch.nn.Flatten())
        >>> features = embedding_metric(network, name="conv", input_size=16)
        >>> result = run_audit([features], root=sample_root, out=scratch / "audit",
        ...                    cache=scratch / "scores.sqlite", num_workers=0, report=False,
        ...                    progress=False)
        >>> result.summary["metrics"]["conv"]["cache_id"] == features.cache_id
        True
    """
    return FunctionEmbeddingMetric(
        function, name=name, input_size=input_size, cache_id=cache_id, device=device
    )
