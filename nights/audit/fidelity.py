"""What a reduced precision or another backend changes, measured against fp32 on triplets.

A metric that carries a ``reference`` (a DreamSim at bf16, fp16 or int8, or on ONNX Runtime:
:class:`~nights.metrics.DreamSimMetric`) is scored beside its fp32 reference on sets of
triplets, and :func:`dreamsim.fidelity_report` compares the two: the largest |distance
difference|, the share of 2AFC decisions flipped, the change of the 2AFC score (with votes).
The sets: the embedded synthetic sample (always; its 240 triplets, with votes) and any folder
named, either a NIGHTS folder or triplets in upstream's demo layout (``ref_K.png``,
``img_a_K.png``, ``img_b_K.png``, no votes). Both models' distances on a NIGHTS folder go
through the score cache, so a second audit computes nothing again.

Example::

    >>> from nights.audit.fidelity import fidelity_on_sets
    >>> from nights.metrics import get_metric
    >>> fidelity_on_sets(get_metric("psnr"), [])  # an exact metric: nothing to measure
    {}
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import DatasetNotFoundError
from ..images import channels_first, resized_pixels
from ..score_cache import ScoreCache
from ..synthetic import ensure_sample
from ..table import load_nights, resolve_source
from .scoring import pair_distances

SAMPLE = "embedded sample"
_PAIRS = [("ref", "left"), ("ref", "right")]
_DEMO_LAYOUT = ("ref_{}.png", "img_a_{}.png", "img_b_{}.png")


def _table_distances(metric, root: Path, cache: ScoreCache, options: dict):
    table = load_nights(
        "all", root=root, min_votes=None, image_size=metric.input_size, progress=False
    )
    distances = pair_distances(table, metric, _PAIRS, cache=cache, **options)
    votes = np.asarray(table["right_vote"], dtype=np.float64)
    return distances[_PAIRS[0]], distances[_PAIRS[1]], votes


def _demo_triplets(folder: Path) -> list[tuple[Path, Path, Path]]:
    """The triplets of a folder in upstream's demo layout, by their number ``K``."""
    triplets = []
    for ref in sorted(folder.glob("ref_*.png")):
        number = ref.stem.removeprefix("ref_")
        paths = tuple(folder / name.format(number) for name in _DEMO_LAYOUT)
        missing = [path.name for path in paths if not path.is_file()]
        if missing:
            raise DatasetNotFoundError(
                f"{folder}: {ref.name} has no {' nor '.join(missing)} beside it; add the "
                "missing image or remove the triplet"
            )
        triplets.append(paths)
    if not triplets:
        raise DatasetNotFoundError(
            f"{folder}: neither a NIGHTS folder nor triplets named ref_K.png, img_a_K.png, "
            "img_b_K.png: name a folder that holds one of them"
        )
    return triplets


def _folder_distances(metric, folder: Path):

    columns = zip(*_demo_triplets(folder))
    ref, left, right = (
        metric.embed(
            channels_first(np.stack([resized_pixels(p, metric.input_size) for p in paths]))
            .float()
            .div_(255)
        )
        for paths in columns
    )
    return (
        metric.distances(ref, left).double().numpy(),
        metric.distances(ref, right).double().numpy(),
        None,
    )


def _distances(metric, source: Path, cache: ScoreCache, options: dict):
    try:
        resolve_source(source)
    except DatasetNotFoundError:
        return _folder_distances(metric, source)
    return _table_distances(metric, source, cache, options)


def fidelity_on_sets(
    metric,
    folders: Sequence[str | os.PathLike],
    *,
    cache: ScoreCache | None = None,
    **options,
) -> dict[str, dict]:
    """The fidelity of ``metric`` against its fp32 ``reference`` on the embedded sample and on
    each of ``folders``; empty for a metric without one (fp32 on torch, PSNR, ...).

    Args:
        metric: a metric; only one with a ``reference`` is measured.
        folders: more triplets: NIGHTS folders or folders in upstream's demo layout.
        cache: the score cache for both models' distances on NIGHTS folders.
        options: ``batch_size``, ``num_workers``, ``progress`` (see
            :func:`~nights.audit.scoring.pair_distances`).

    Returns:
        ``{set name: dreamsim.FidelityReport.to_dict()}``: ``embedded sample``, then each
        folder by its name.

    Raises:
        DatasetNotFoundError: a folder holds no triplets.
    """
    from dreamsim import fidelity_report

    reference = getattr(metric, "reference", None)
    if reference is None:
        return {}
    cache = cache if cache is not None else ScoreCache()
    sets = {SAMPLE: ensure_sample(), **{Path(f).name: Path(f) for f in folders}}
    reports = {}
    for name, source in sets.items():
        exact = _distances(reference, source, cache, options)
        candidate = _distances(metric, source, cache, options)
        reports[name] = fidelity_report(
            exact[:2], candidate[:2], exact[2], precision=metric.precision
        ).to_dict()
    return reports
