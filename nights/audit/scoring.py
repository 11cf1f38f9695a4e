"""Distances between the images of a triplet table, for any metric, cached by image content.

:func:`score_table` computes ``d_left = d(ref, left)`` and ``d_right = d(ref, right)`` for
every triplet and metric, embedding each distinct image once (a reference shared by several
triplets too) and caching every embedding and pair distance by image content
(:mod:`nights.score_cache`): a rerun computes nothing it has seen. A metric may be given by its
name (see :func:`nights.metrics.get_metric`). :func:`measure_scoring` measures what scoring
costs (images computed, time, peak memory), for the leaderboard.

Example::

    >>> from nights import load_nights
    >>> from nights.audit.scoring import score_table
    >>> from nights.metrics import get_metric
    >>> table = load_nights("test", root=sample_root)
    >>> scores = score_table(table, [get_metric("psnr"), "ssim"], progress=False)
    >>> list(scores.columns), len(scores) == 2 * len(table)
    (['id', 'metric', 'd_left', 'd_right'], True)
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
from PIL import Image

from .. import pixels
from .._progress import progress_bar
from ..errors import ImageError, IntegrityError, NightsError
from ..images import channels_first, open_rgb, resize_like_dreamsim
from ..metrics import EmbeddingMetric, Metric, PairMetric, as_metric, batch_size_for
from ..schema import IMAGE_COLUMNS
from ..score_cache import ScoreCache, content_key
from .stats import jnd_average_precision

CHUNK_ROWS = 4096  # rows scored at a time: memory stays flat however long the table is


@dataclass
class ScoringCost:
    """What scoring cost, as :func:`measure_scoring` measures it.

    Attributes:
        images: images the metrics computed: one per embedded image, two per pair compared
            (what the score cache already held costs nothing and is not counted).
        seconds: wall time.
        peak_memory: bytes. ``memory == "cuda"``: ``torch.cuda.max_memory_allocated`` during
            the scoring (the peak is reset at its start, so the weights on the card count);
            ``"rss"``: this process's resident-memory high-water mark during the scoring minus
            its resident memory at the start (Linux; None elsewhere), so the weights loaded
            before do not count; DataLoader workers decoding images are other processes.
        memory: ``cuda`` or ``rss``.
    """

    images: int = 0
    seconds: float = 0.0
    peak_memory: int | None = None
    memory: str = "rss"

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.images and self.seconds > 0 else math.nan


def _resident_bytes(field: str) -> int:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field))
    return int(line.split()[1]) * 1024


def _reset_resident_peak() -> int | None:
    """Resident bytes now, the high-water mark set back to them (Linux's ``clear_refs``);
    None where that cannot be done."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return _resident_bytes("VmRSS:")
    except (OSError, StopIteration):
        return None


@contextlib.contextmanager
def measure_scoring(device=None) -> Iterator[ScoringCost]:
    """Measures the block's time and peak memory on ``device`` (see :class:`ScoringCost`);
    pass the cost it yields to the scoring (``cost=``), which counts the images.

    Example::

        >>> from nights import load_nights
        >>> from nights.audit.scoring import measure_scoring, score_table
        >>> table = load_nights("test", root=sample_root)
        >>> with measure_scoring() as cost:
        ...     _ = score_table(table, ["psnr"], cache=scratch / "c.sqlite", cost=cost,
        ...                     progress=False)
        >>> cost.images == 4 * len(table), cost.images_per_second > 0
        (True, True)
    """
    import torch

    device = torch.device(device or "cpu")
    on_cuda = device.type == "cuda"
    cost = ScoringCost(memory="cuda" if on_cuda else "rss")
    if on_cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        start = _reset_resident_peak()
    began = time.perf_counter()
    try:
        yield cost
    finally:
        if on_cuda:
            torch.cuda.synchronize(device)
            cost.peak_memory = torch.cuda.max_memory_allocated(device)
        elif start is not None:
            cost.peak_memory = max(0, _resident_bytes("VmHWM:") - start)
        cost.seconds = time.perf_counter() - began


class TableImages:
    """The distinct images of a table's image columns, by content key.

    Only keys and row positions are held: the bytes stay in the memory-mapped table and are
    read when an image is decoded, so memory does not grow with the number of triplets. Raw
    pixels (a table built with ``images="pixels"``) are keyed by the sha256 of their bytes and
    read without decoding.
    """

    def __init__(self, table, columns=IMAGE_COLUMNS, progress: bool | None = None):
        self.ids = table.select_columns(["id"]).with_format("arrow")
        self.rows = table.select_columns(list(columns)).with_format("arrow")
        self.raw = {
            c
            for c in columns
            if pixels.is_pixel_column(self.rows.features.arrow_schema.field(c).type)
        }
        self.keys: dict[str, list[str]] = {column: [] for column in columns}
        self.where: dict[str, tuple[int, str]] = {}
        for start in progress_bar(
            range(0, len(table), 256), progress=progress, desc="hashing images", unit="batch"
        ):
            batch = self.rows[start : start + 256]
            for column in columns:
                keys = (
                    [
                        hashlib.sha256(image).hexdigest()
                        for image in pixels.to_numpy(
                            batch.column(column),
                            column,
                            self.ids[start : start + 256]["id"].to_pylist(),
                        )
                    ]
                    if column in self.raw
                    else [content_key(storage) for storage in batch.column(column).to_pylist()]
                )
                self.keys[column] += keys
                for offset, key in enumerate(keys):
                    self.where.setdefault(key, (start + offset, column))

    def storage(self, key: str):
        """The image as the table holds it: a ``datasets.Image`` storage dict, or raw pixels
        ``[S, S, 3]``."""
        row, column = self.where[key]
        cell = self.rows[row : row + 1].column(column)
        return (
            pixels.to_numpy(cell, column, self.ids[row : row + 1]["id"].to_pylist())[0]
            if column in self.raw
            else cell[0].as_py()
        )

    def tensor(self, key: str, size: int | None):
        """uint8 ``[3, H, W]``; resized as DreamSim preprocesses when ``size`` is given.

        Raises:
            IntegrityError: the image cannot be read; the file and a triplet using it named.
        """

        storage = self.storage(key)
        if isinstance(storage, np.ndarray):
            image = (
                storage
                if size in (None, storage.shape[0])
                else np.asarray(resize_like_dreamsim(Image.fromarray(storage), size))
            )
            return channels_first(image)
        try:
            image = open_rgb(storage["bytes"] or storage["path"], storage["path"])
        except ImageError as error:
            row, column = self.where[key]
            triplet = self.ids[row : row + 1].column("id")[0].as_py()
            raise IntegrityError(
                f"triplet {triplet}, {column}: {error}; restore the file (`nights verify` "
                "lists every bad image) and run again"
            ) from None
        if size:
            image = resize_like_dreamsim(image, size)
        return channels_first(image)


def _loader(items: list, fetch, batch_size: int, num_workers: int):
    """Batches of ``fetch(item)``, decoded by DataLoader workers while the model runs.

    A worker hands a NightsError back as a value, for :func:`_raise_failures`: raised in the
    worker, it would reach the user wrapped in the worker's traceback.
    """
    import torch

    class Items(torch.utils.data.Dataset):
        def __len__(self):
            return len(items)

        def __getitem__(self, index):
            try:
                return fetch(items[index])
            except NightsError as error:
                return error

    return torch.utils.data.DataLoader(
        Items(), batch_size=batch_size, num_workers=num_workers, collate_fn=list
    )


def _raise_failures(batch: list) -> list:
    """The batch, once sure no item of it is an error from :func:`_loader`."""
    for item in batch:
        if isinstance(item, NightsError):
            raise item
    return batch


def _by_shape(batch: list, shape: Callable) -> list[list]:
    """The batch's items grouped by ``shape(item)``: images of different sizes (scored at
    their own resolution) cannot share a tensor."""
    groups: dict[tuple, list] = {}
    for item in batch:
        groups.setdefault(shape(item), []).append(item)
    return list(groups.values())


def _embed_missing(
    metric: EmbeddingMetric,
    images: TableImages,
    cache: ScoreCache,
    batch_size: int,
    num_workers: int,
    progress,
    cost: ScoringCost,
) -> None:
    import torch

    todo = cache.missing_embeddings(metric.cache_id, images.where)
    if not todo:
        return
    loader = _loader(
        todo, lambda key: (key, images.tensor(key, metric.input_size)), batch_size, num_workers
    )
    for batch in map(
        _raise_failures,
        progress_bar(
            loader,
            progress=progress,
            desc=f"embedding {len(todo)} images",
            unit="batch",
            leave=False,
        ),
    ):
        for group in _by_shape(batch, lambda item: item[1].shape):
            pixels = torch.stack([image for _, image in group]).float().div_(255)
            cache.put_embeddings(
                metric.cache_id, [key for key, _ in group], metric.embed(pixels).numpy()
            )
        cost.images += len(batch)


def _pairs_missing(
    metric: PairMetric,
    pairs,
    images: TableImages,
    cache: ScoreCache,
    batch_size: int,
    num_workers: int,
    progress,
    cost: ScoringCost,
) -> None:
    import torch

    todo = cache.missing_pairs(metric.cache_id, pairs)
    if not todo:
        return
    size = metric.input_size
    loader = _loader(
        todo,
        lambda pair: (pair, images.tensor(pair[0], size), images.tensor(pair[1], size)),
        batch_size,
        num_workers,
    )
    for batch in map(
        _raise_failures,
        progress_bar(
            loader, progress=progress, desc=f"{len(todo)} pairs", unit="batch", leave=False
        ),
    ):
        for group in _by_shape(batch, lambda item: (item[1].shape, item[2].shape)):
            a = torch.stack([item[1] for item in group]).float().div_(255)
            b = torch.stack([item[2] for item in group]).float().div_(255)
            cache.put_pairs(
                metric.cache_id, [item[0] for item in group], metric.distances(a, b).numpy()
            )
        cost.images += 2 * len(batch)


def _chunk_distances(metric, chunk, columns, pairs, cache, options) -> dict:
    """Distances of one chunk of rows; what the cache lacks is computed and stored first."""
    import torch

    images = TableImages(chunk, columns, progress=False)
    keys = images.keys
    if isinstance(metric, PairMetric):
        key_pairs = {pair: list(zip(keys[pair[0]], keys[pair[1]])) for pair in pairs}
        wanted = [kp for values in key_pairs.values() for kp in values]
        _pairs_missing(metric, wanted, images, cache, **options)
        return {pair: cache.get_pairs(metric.cache_id, kp) for pair, kp in key_pairs.items()}
    _embed_missing(metric, images, cache, **options)
    embeddings = {
        c: torch.from_numpy(cache.get_embeddings(metric.cache_id, keys[c])) for c in columns
    }
    return {
        (a, b): metric.distances(embeddings[a], embeddings[b]).double().numpy() for a, b in pairs
    }


def pair_distances(
    table,
    metric: Metric | str,
    pairs: list[tuple[str, str]],
    *,
    cache: ScoreCache | str | None = None,
    batch_size: int | None = None,
    num_workers: int = 0,
    progress: bool | None = None,
    cost: ScoringCost | None = None,
) -> dict[tuple[str, str], np.ndarray]:
    """Distances between the images of column pairs (e.g. ``("ref", "left")``) of every row.

    The table streams through in chunks of :data:`CHUNK_ROWS` rows; an image shared across
    chunks is computed once, since the cache (keyed by content) is asked first.
    ``batch_size`` defaults to :func:`~nights.metrics.batch_size_for` the metric's device;
    ``cost``, when given, counts the images computed (see :func:`measure_scoring`).
    """
    metric = as_metric(metric)
    cache = cache if isinstance(cache, ScoreCache) else ScoreCache(cache)
    if batch_size is None:
        batch_size = batch_size_for(metric.device)
    columns = tuple(dict.fromkeys(c for pair in pairs for c in pair))
    options = {
        "batch_size": batch_size,
        "num_workers": num_workers,
        "progress": progress,
        "cost": cost if cost is not None else ScoringCost(),
    }
    parts: dict[tuple[str, str], list] = {pair: [] for pair in pairs}
    with progress_bar(total=len(table), progress=progress, desc=metric.name, unit="row") as bar:
        for start in range(0, len(table), CHUNK_ROWS):
            chunk = table.select(range(start, min(start + CHUNK_ROWS, len(table))))
            for pair, values in _chunk_distances(
                metric, chunk, columns, pairs, cache, options
            ).items():
                parts[pair].append(values)
            bar.update(len(chunk))
    return {
        pair: np.concatenate(values) if values else np.zeros(0) for pair, values in parts.items()
    }


def score_table(table, metrics: list[Metric | str], **options) -> pd.DataFrame:
    """``id, metric, d_left, d_right`` for every triplet and metric (long format).

    ``options``: ``cache``, ``batch_size``, ``num_workers``, ``progress``, ``cost`` (see
    :func:`pair_distances`).
    """
    frames = []
    for metric in map(as_metric, metrics):
        distances = pair_distances(table, metric, [("ref", "left"), ("ref", "right")], **options)
        frames.append(
            pd.DataFrame(
                {
                    "id": table["id"],
                    "metric": metric.name,
                    "d_left": distances[("ref", "left")],
                    "d_right": distances[("ref", "right")],
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def jnd_scores(jnd_table, metrics: list[Metric | str], **options) -> dict[str, float]:
    """JND average precision of each metric on a :func:`nights.load_jnd` table."""
    same = np.asarray(jnd_table["same"], dtype=np.float64)
    return {
        metric.name: jnd_average_precision(
            pair_distances(jnd_table, metric, [("ref", "distort")], **options)[("ref", "distort")],
            same,
        )
        for metric in map(as_metric, metrics)
    }
