"""Scoring triplets with metrics and auditing their agreement with the human votes.

:func:`score_table` computes ``d_left = d(ref, left)`` and ``d_right = d(ref, right)`` for
every triplet and metric, embedding each distinct image once (a reference shared by several
triplets too) and caching every embedding and pair distance by image content
(:mod:`nights.score_cache`). :func:`audit_frame` turns the distances into a per-triplet audit
(model and human choices, agreement, confidence, label-noise candidates), :func:`summarize`
into agreement statistics with bootstrap intervals, and :func:`write_outputs` writes the
Parquet, JSON and single-file HTML report.

Example::

    >>> from nights import load_nights
    >>> from nights.audit import audit_frame, score_table, summarize
    >>> from nights.metrics import get_metric
    >>> table = load_nights("test", image_size=224)                          # doctest: +SKIP
    >>> scores = score_table(table, [get_metric("dreamsim")])                # doctest: +SKIP
    >>> summarize(audit_frame(scores, table))["metrics"]["dreamsim:ensemble"]  # doctest: +SKIP

From the shell: ``nights audit`` or ``python scripts/audit_agreement.py``.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .errors import ImageError, IntegrityError, NightsError
from .images import open_rgb, resize_like_dreamsim
from .metrics import (
    EmbeddingMetric,
    Metric,
    PairMetric,
    batch_size_for,
    bootstrap_interval,
    fit_vote_likelihood,
    jnd_average_precision,
    two_afc,
)
from .score_cache import ScoreCache, content_key
from .votes import votes_frame

IMAGE_COLUMNS = ("ref", "left", "right")
LABEL_NOISE_MARGIN = 1.0  # in standard deviations of the metric's margins


class TableImages:
    """The distinct images of a table's image columns, by content key.

    Only keys and row positions are held: the bytes stay in the memory-mapped table and are
    read when an image is decoded, so memory does not grow with the number of triplets.
    """

    def __init__(self, table, columns=IMAGE_COLUMNS, progress: bool | None = None):
        self.ids = table.select_columns(["id"]).with_format("arrow")
        self.rows = table.select_columns(list(columns)).with_format("arrow")
        self.keys: dict[str, list[str]] = {column: [] for column in columns}
        self.where: dict[str, tuple[int, str]] = {}
        for start in tqdm(
            range(0, len(table), 256),
            desc="hashing images",
            unit="batch",
            disable=None if progress is None else not progress,
        ):
            for offset, row in enumerate(self.rows[start : start + 256].to_pylist()):
                for column in columns:
                    key = content_key(row[column])
                    self.keys[column].append(key)
                    self.where.setdefault(key, (start + offset, column))

    def storage(self, key: str) -> dict:
        row, column = self.where[key]
        return self.rows[row : row + 1].column(column)[0].as_py()

    def tensor(self, key: str, size: int | None):
        """uint8 ``[3, H, W]``; resized as DreamSim preprocesses when ``size`` is given.

        Raises:
            IntegrityError: the image cannot be read; the file and a triplet using it named.
        """
        import torch

        storage = self.storage(key)
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
        return torch.from_numpy(np.array(image)).permute(2, 0, 1)


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


def _bar(iterable, description: str, progress: bool | None):
    return tqdm(
        iterable,
        desc=description,
        unit="batch",
        leave=False,
        disable=None if progress is None else not progress,
    )


def _embed_missing(
    metric: EmbeddingMetric,
    images: TableImages,
    cache: ScoreCache,
    batch_size: int,
    num_workers: int,
    progress,
) -> None:
    import torch

    todo = cache.missing_embeddings(metric.cache_id, images.where)
    if not todo:
        return
    loader = _loader(todo, lambda key: (key, images.tensor(key, 224)), batch_size, num_workers)
    for batch in map(_raise_failures, _bar(loader, f"embedding {len(todo)} images", progress)):
        pixels = torch.stack([image for _, image in batch]).float().div_(255)
        cache.put_embeddings(
            metric.cache_id, [key for key, _ in batch], metric.embed(pixels).numpy()
        )


def _pairs_missing(
    metric: PairMetric,
    pairs,
    images: TableImages,
    cache: ScoreCache,
    batch_size: int,
    num_workers: int,
    progress,
) -> None:
    import torch

    todo = cache.missing_pairs(metric.cache_id, pairs)
    if not todo:
        return
    loader = _loader(
        todo,
        lambda pair: (pair, images.tensor(pair[0], None), images.tensor(pair[1], None)),
        batch_size,
        num_workers,
    )
    for batch in map(_raise_failures, _bar(loader, f"{len(todo)} pairs", progress)):
        by_shape: dict[tuple, list] = {}
        for item in batch:  # images of different sizes cannot share a tensor
            by_shape.setdefault((item[1].shape, item[2].shape), []).append(item)
        for group in by_shape.values():
            a = torch.stack([item[1] for item in group]).float().div_(255)
            b = torch.stack([item[2] for item in group]).float().div_(255)
            cache.put_pairs(
                metric.cache_id, [item[0] for item in group], metric.distances(a, b).numpy()
            )


CHUNK_ROWS = 4096  # rows scored at a time: memory stays flat however long the table is


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
    metric: Metric,
    pairs: list[tuple[str, str]],
    *,
    cache: ScoreCache | None = None,
    batch_size: int | None = None,
    num_workers: int = 0,
    progress: bool | None = None,
) -> dict[tuple[str, str], np.ndarray]:
    """Distances between the images of column pairs (e.g. ``("ref", "left")``) of every row.

    The table streams through in chunks of :data:`CHUNK_ROWS` rows; an image shared across
    chunks is computed once, since the cache (keyed by content) is asked first.
    ``batch_size`` defaults to :func:`~nights.metrics.batch_size_for` the model's device for
    embedding metrics, 32 for pair metrics (which run on the CPU).
    """
    cache = cache or ScoreCache()
    if batch_size is None:
        batch_size = batch_size_for(metric.device) if isinstance(metric, EmbeddingMetric) else 32
    columns = tuple(dict.fromkeys(c for pair in pairs for c in pair))
    options = {"batch_size": batch_size, "num_workers": num_workers, "progress": progress}
    parts: dict[tuple[str, str], list] = {pair: [] for pair in pairs}
    with tqdm(
        total=len(table),
        desc=metric.name,
        unit="row",
        disable=None if progress is None else not progress,
    ) as bar:
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


def score_table(table, metrics: list[Metric], **options) -> pd.DataFrame:
    """``id, metric, d_left, d_right`` for every triplet and metric (long format).

    ``options``: ``cache``, ``batch_size``, ``num_workers``, ``progress``.
    """
    frames = []
    for metric in metrics:
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


def jnd_scores(jnd_table, metrics: list[Metric], **options) -> dict[str, float]:
    """JND average precision of each metric on a :func:`nights.load_jnd` table."""
    same = np.asarray(jnd_table["same"], dtype=np.float64)
    return {
        metric.name: jnd_average_precision(
            pair_distances(jnd_table, metric, [("ref", "distort")], **options)[("ref", "distort")],
            same,
        )
        for metric in metrics
    }


def _choice(values: np.ndarray) -> np.ndarray:
    """'right' where positive, 'left' where negative, 'tie' at zero."""
    return np.where(values > 0, "right", np.where(values < 0, "left", "tie"))


def audit_frame(scores: pd.DataFrame, table) -> pd.DataFrame:
    """One row per (triplet, metric): distances, choices, agreement, confidence, flags.

    ``margin = d_left - d_right`` (positive: the model finds the right image closer);
    ``human_choice`` is the majority side (``tie`` at 50/50); ``two_afc`` the soft-target
    score; ``confidence`` the fitted probability of the model's choice (see
    :func:`nights.metrics.fit_vote_likelihood`); ``label_noise_candidate`` marks confident
    disagreements with unanimous humans (margin over one standard deviation of the metric's
    margins). Without votes the human columns are null.
    """
    votes = votes_frame(table)
    merged = scores.merge(votes, on="id", how="left")
    merged["margin"] = merged["d_left"] - merged["d_right"]
    merged["model_choice"] = _choice(merged["margin"].to_numpy())
    has_votes = "right_vote" in merged and merged["right_vote"].notna().any()
    parts = []
    for _, part in merged.groupby("metric", sort=False):
        part = part.copy()
        spread = part["margin"].std() or 1.0
        part["normalized_margin"] = part["margin"].abs() / spread
        if has_votes:
            part["human_choice"] = _choice(part["right_vote"].to_numpy() - 0.5)
            part["agree"] = part["model_choice"] == part["human_choice"]
            part["two_afc"] = two_afc(part["d_left"], part["d_right"], part["right_vote"])
            fit = fit_vote_likelihood(part["margin"], part["right_vote"], part["votes"])
            k = fit["k"] if math.isfinite(fit["k"]) else 0.0
            part["confidence"] = 1 / (1 + np.exp(-abs(k) * part["margin"].abs()))
            unanimous = np.maximum(part["left_vote"], part["right_vote"]) >= 1 - 1e-9
            part["label_noise_candidate"] = (
                ~part["agree"] & unanimous & (part["normalized_margin"] >= LABEL_NOISE_MARGIN)
            )
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def _group_stats(frame: pd.DataFrame, rounds: int) -> dict:
    low, high = bootstrap_interval(frame["two_afc"], rounds)
    return {
        "triplets": len(frame),
        "two_afc": float(frame["two_afc"].mean()),
        "ci95": [low, high],
        "agree": float(frame["agree"].mean()),
    }


def summarize(audit: pd.DataFrame, rounds: int = 1000, jnd: dict | None = None) -> dict:
    """Agreement per metric: overall and by split, is_imagenet, prompt and vote count, with
    bootstrap 95% intervals; the vote likelihood; JND average precision when given."""
    summary: dict = {"metrics": {}}
    for metric, part in audit.groupby("metric", sort=False):
        entry: dict = {"triplets": len(part)}
        if "two_afc" in part:
            entry["overall"] = _group_stats(part, rounds)
            for column in ("split", "is_imagenet", "prompt", "votes"):
                entry[f"by_{column}"] = {
                    str(value): _group_stats(group, rounds)
                    for value, group in part.groupby(column, sort=True)
                }
            entry["vote_likelihood"] = fit_vote_likelihood(
                part["margin"], part["right_vote"], part["votes"]
            )
            entry["label_noise_candidates"] = int(part["label_noise_candidate"].sum())
        if jnd and metric in jnd:
            entry["jnd_average_precision"] = jnd[metric]
        summary["metrics"][metric] = entry
    return summary


def agreement_table(summary: dict) -> str:
    """The table the command prints: one line per metric."""
    lines = [
        f"{'metric':<28}{'triplets':>9}{'2AFC':>8}{'95% CI':>17}{'agree':>8}"
        f"{'loglik/vote':>13}{'flagged':>9}"
    ]
    for metric, entry in summary["metrics"].items():
        if "overall" not in entry:
            lines.append(f"{metric:<28}{entry['triplets']:>9}   (no votes: distances only)")
            continue
        overall, fit = entry["overall"], entry["vote_likelihood"]
        interval = f"[{overall['ci95'][0]:.3f}, {overall['ci95'][1]:.3f}]"
        lines.append(
            f"{metric:<28}{overall['triplets']:>9}{overall['two_afc']:>8.3f}"
            f"{interval:>17}{overall['agree']:>8.3f}"
            f"{fit['log_likelihood_per_vote']:>13.3f}"
            f"{entry['label_noise_candidates']:>9}"
        )
    return "\n".join(lines)


# -- the HTML report --


def _figure_png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def _plots(audit: pd.DataFrame) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = []
    figure, axis = plt.subplots(figsize=(6, 3.5))
    for metric, part in audit.groupby("metric", sort=False):
        by_votes = part.groupby("votes")["two_afc"].mean()
        axis.plot(by_votes.index, by_votes.values, marker="o", label=metric)
    axis.set(xlabel="votes", ylabel="2AFC score", title="Agreement vs. number of votes")
    axis.legend(fontsize=7)
    plots.append(("Agreement vs. vote count", _figure_png(figure)))
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(6, 3.5))
    for metric, part in audit.groupby("metric", sort=False):
        signed = np.where(part["agree"], 1, -1) * part["normalized_margin"]
        axis.hist(signed, bins=30, alpha=0.5, label=metric)
    axis.axvline(0, color="black", linewidth=0.8)
    axis.set(
        xlabel="margin / std (negative: disagrees with the humans)",
        ylabel="triplets",
        title="Margin histogram",
    )
    axis.legend(fontsize=7)
    plots.append(("Margin histogram", _figure_png(figure)))
    plt.close(figure)

    prompts = audit.groupby(["prompt", "metric"])["two_afc"].mean().unstack("metric")
    figure, axis = plt.subplots(figsize=(7, 0.3 * len(prompts) + 1.5))
    prompts.plot.barh(ax=axis, legend=True)
    axis.set(xlabel="2AFC score", ylabel="", title="By category")
    axis.legend(fontsize=7)
    plots.append(("Per category", _figure_png(figure)))
    plt.close(figure)
    return plots


def _thumbnail(storage: dict, size: int = 160) -> str:
    image = open_rgb(storage["bytes"] or storage["path"])
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return base64.b64encode(buffer.getvalue()).decode()


def _html_table(frame: pd.DataFrame) -> str:
    return frame.to_html(
        index=False, float_format=lambda v: f"{v:.3f}", escape=True, border=0, classes="data"
    )


def write_report(path: Path, audit: pd.DataFrame, summary: dict, table, top: int = 24) -> None:
    """A single HTML file (images inline) that opens offline."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>NIGHTS audit</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}"
        "table.data{border-collapse:collapse;font-size:13px}"
        "table.data td,table.data th{padding:3px 8px;border-bottom:1px solid #ddd}"
        ".triplet{display:inline-block;margin:8px;padding:6px;border:1px solid #ccc;"
        "font-size:12px;width:500px}.triplet img{width:160px;height:160px}</style>",
        "</head><body><h1>NIGHTS agreement audit</h1>",
        f"<pre>{html.escape(agreement_table(summary))}</pre>",
    ]
    if "two_afc" not in audit:
        parts.append("<p>The table has no votes: only distances were computed.</p>")
    else:
        for metric, entry in summary["metrics"].items():
            parts.append(f"<h2>{html.escape(metric)}</h2>")
            for grouping in ("split", "is_imagenet", "votes"):
                rows = pd.DataFrame(
                    [
                        {
                            grouping: key,
                            **{k: v for k, v in value.items() if k != "ci95"},
                            "ci95": "[{:.3f}, {:.3f}]".format(*value["ci95"]),
                        }
                        for key, value in entry[f"by_{grouping}"].items()
                    ]
                )
                parts.append(f"<h3>by {grouping}</h3>" + _html_table(rows))
        for title, png in _plots(audit):
            parts.append(f"<h2>{html.escape(title)}</h2><img src='data:image/png;base64,{png}'>")
        parts.append(f"<h2>Top {top} confident disagreements</h2>")
        flagged = audit[~audit["agree"]].sort_values("normalized_margin", ascending=False)
        rows_by_id = {identifier: index for index, identifier in enumerate(table["id"])}
        images = table.select_columns(list(IMAGE_COLUMNS)).with_format("arrow")
        for _, row in flagged.head(top).iterrows():
            storage = images[rows_by_id[row["id"]] : rows_by_id[row["id"]] + 1].to_pylist()[0]
            pictures = "".join(
                f"<img title='{c}' src='data:image/jpeg;base64,{_thumbnail(storage[c])}'>"
                for c in IMAGE_COLUMNS
            )
            parts.append(
                f"<div class='triplet'>{pictures}<br>id {int(row['id'])} · "
                f"{html.escape(str(row['prompt']))} · {html.escape(row['metric'])}<br>"
                f"humans: {row['human_choice']} ({int(row['votes'])} votes, right_vote "
                f"{row['right_vote']:.2f}) · model: {row['model_choice']} "
                f"(margin {row['normalized_margin']:.2f} sd)"
                f"{' · <b>label-noise candidate</b>' if row['label_noise_candidate'] else ''}"
                "</div>"
            )
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")


def write_outputs(out: Path, audit: pd.DataFrame, summary: dict, table) -> dict[str, Path]:
    """``audit.parquet`` (per triplet and metric), ``summary.json``, ``report.html``,
    ``label_noise_candidates.csv`` (ranked)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "parquet": out / "audit.parquet",
        "json": out / "summary.json",
        "html": out / "report.html",
        "candidates": out / "label_noise_candidates.csv",
    }
    audit.to_parquet(paths["parquet"], index=False)
    paths["json"].write_text(json.dumps(summary, indent=2, default=float))
    if "label_noise_candidate" in audit:
        flagged = audit[audit["label_noise_candidate"]].sort_values(
            "normalized_margin", ascending=False
        )
        flagged.to_csv(paths["candidates"], index=False)
    write_report(paths["html"], audit, summary, table)
    return paths


def iter_label_noise_ids(
    audit_path: Path, max_margin: float, metric: str | None = None
) -> Iterator[int]:
    """Ids where the model disagrees with the humans by more than ``max_margin`` standard
    deviations (the first metric of the audit unless ``metric`` is given)."""
    audit = pd.read_parquet(audit_path)
    metric = metric or audit["metric"].iloc[0]
    part = audit[audit["metric"] == metric]
    if part.empty:
        raise ValueError(
            f"{audit_path} has no metric {metric!r} (it has {', '.join(audit['metric'].unique())})"
        )
    flagged = part[~part["agree"].astype(bool) & (part["normalized_margin"] > max_margin)]
    yield from (int(i) for i in flagged["id"])
