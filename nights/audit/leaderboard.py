"""The leaderboard: metrics side by side on the same triplets, and which differences are real.

One row per metric, best 2AFC first: the 2AFC on the split with its bootstrap 95% interval,
the 2AFC on the ImageNet and non-ImageNet triplets, the JND average precision (when the data
has JND votes), the binomial log-likelihood per vote, and what scoring cost (images/s and peak
memory, see :class:`~nights.audit.scoring.ScoringCost`). For each pair of metrics, a paired
bootstrap (:func:`~nights.audit.stats.paired_bootstrap`): the triplets resampled once per round
for both, the interval of the difference of their 2AFC and its p-value.

Example::

    >>> from nights.audit import run_audit
    >>> result = run_audit(["psnr", "ssim"], root=sample_root, out=scratch / "audit",
    ...                    cache=scratch / "scores.sqlite", num_workers=0, report=False,
    ...                    progress=False, leaderboard=True)
    >>> result.leaderboard.metrics["metric"].tolist() in (["psnr", "ssim"], ["ssim", "psnr"])
    True
    >>> list(result.leaderboard.pairs.columns[:3])
    ['metric_a', 'metric_b', 'difference']
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from ..errors import ArgumentError
from .stats import paired_bootstrap

LEVEL = 0.95


@dataclass
class Leaderboard:
    """The two tables, with what makes them reproducible.

    Attributes:
        metrics: one row per metric, best 2AFC first: ``metric, triplets, two_afc, ci95_low,
            ci95_high, two_afc_imagenet, two_afc_not_imagenet, jnd_average_precision,
            log_likelihood_per_vote, images_per_second, peak_memory_mb, memory, images,
            seconds, input_size, cache_id`` (``images``: those computed, not read from the
            score cache; a metric scored from the cache alone has no speed).
        pairs: one row per pair of metrics (the better ranked first): ``metric_a, metric_b,
            difference`` (2AFC of a minus b), ``ci95_low, ci95_high, p_value, differs`` (p
            under 0.05: the difference is more than resampling noise).
        rounds / seed: the bootstrap's; the same seed gives the same tables.
    """

    metrics: pd.DataFrame
    pairs: pd.DataFrame
    rounds: int
    seed: int

    def metric_table(self) -> pd.DataFrame:
        """:attr:`metrics` as shown: formatted, the intervals in brackets."""
        return _metric_rows(self.metrics)

    def pair_table(self) -> pd.DataFrame:
        """:attr:`pairs` as shown."""
        return _pair_rows(self.pairs)

    def to_markdown(self) -> str:
        """Both tables as Markdown, with a line saying how to read them."""
        return "\n".join(
            [
                _markdown(self.metric_table(), text_columns=1),
                "",
                "peak MB: " + _memory_note(self.metrics),
                "",
                self._pairs_markdown(),
            ]
        )

    def _pairs_markdown(self) -> str:
        pairs = self.pair_table()
        if pairs.empty:  # a header with no rows reads as a table that lost its rows
            return "Paired bootstrap: one metric, no pair to compare."
        return (
            f"Paired bootstrap ({self.rounds:,} rounds, seed {self.seed}; the same resampled "
            "triplets for both metrics of a row):\n\n" + _markdown(pairs, text_columns=2)
        )


def _number(value, digits: int = 3, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _interval(low, high) -> str:
    return f"[{_number(low)}, {_number(high)}]"


def _metric_rows(metrics: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "metric": metrics["metric"],
            "triplets": metrics["triplets"].astype(str),
            "2AFC": metrics["two_afc"].map(_number),
            "95% CI": [_interval(a, b) for a, b in zip(metrics["ci95_low"], metrics["ci95_high"])],
            "ImageNet": metrics["two_afc_imagenet"].map(_number),
            "not ImageNet": metrics["two_afc_not_imagenet"].map(_number),
            "JND AP": metrics["jnd_average_precision"].map(_number),
            "loglik/vote": metrics["log_likelihood_per_vote"].map(_number),
            "images/s": [
                "cached" if images == 0 else _number(speed, 1)
                for images, speed in zip(metrics["images"], metrics["images_per_second"])
            ],
            "peak MB": metrics["peak_memory_mb"].map(lambda mb: _number(mb, 0)),
        }
    )


def _pair_rows(pairs: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "A": pairs["metric_a"],
            "B": pairs["metric_b"],
            "A − B": pairs["difference"].map(lambda d: _number(d, signed=True)),
            "95% CI": [_interval(a, b) for a, b in zip(pairs["ci95_low"], pairs["ci95_high"])],
            "p": pairs["p_value"].map(_number),
            "differs": pairs["differs"].map({True: "yes", False: "no"}),
        }
    )


def _memory_note(metrics: pd.DataFrame) -> str:
    notes = {
        "rss": "on the CPU, this process's resident-memory high-water mark while scoring "
        "minus its resident memory before",
        "cuda": "on CUDA, torch.cuda.max_memory_allocated while scoring (weights included)",
    }
    return "; ".join(notes[kind] for kind in dict.fromkeys(metrics["memory"]))


def _markdown(frame: pd.DataFrame, text_columns: int) -> str:
    """A pipe table, the first ``text_columns`` left-aligned and the numbers right-aligned
    (tabulate, which pandas' ``to_markdown`` needs, is not a dependency)."""
    escaped = frame.astype(str).apply(lambda column: column.str.replace("|", r"\|"))
    lines = ["| " + " | ".join(frame.columns) + " |"]
    alignments = ["---" if i < text_columns else "---:" for i in range(frame.shape[1])]
    lines.append("|" + "|".join(alignments) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in escaped.itertuples(index=False)]
    return "\n".join(lines)


def build_leaderboard(
    audit: pd.DataFrame,
    summary: dict,
    costs: Mapping[str, Mapping],
    *,
    rounds: int = 1000,
    seed: int = 0,
) -> Leaderboard:
    """The leaderboard of an audit.

    Args:
        audit: the per-triplet audit (:func:`~nights.audit.stats.audit_frame`), with votes.
        summary: its :func:`~nights.audit.stats.summarize` (with ``cache_id`` and
            ``input_size`` per metric, as :func:`~nights.audit.run_audit` adds them).
        costs: per metric name, the fields of its :class:`~nights.audit.scoring.ScoringCost`
            (``images``, ``seconds``, ``peak_memory``, ``memory``).
        rounds / seed: of the paired bootstrap.

    Raises:
        ValueError: the audit has no votes: there is nothing to rank by.
    """
    if "two_afc" not in audit:
        raise ArgumentError("a leaderboard needs the human votes, and this table has none")
    rows = []
    for name, entry in summary["metrics"].items():
        cost, overall = costs[name], entry["overall"]
        by_imagenet = entry.get("by_is_imagenet", {})
        images, seconds, peak = cost["images"], cost["seconds"], cost["peak_memory"]
        rows.append(
            {
                "metric": name,
                "triplets": overall["triplets"],
                "two_afc": overall["two_afc"],
                "ci95_low": overall["ci95"][0],
                "ci95_high": overall["ci95"][1],
                "two_afc_imagenet": by_imagenet.get("True", {}).get("two_afc", math.nan),
                "two_afc_not_imagenet": by_imagenet.get("False", {}).get("two_afc", math.nan),
                "jnd_average_precision": entry.get("jnd_average_precision", math.nan),
                "log_likelihood_per_vote": entry["vote_likelihood"]["log_likelihood_per_vote"],
                "images_per_second": images / seconds if images and seconds > 0 else math.nan,
                "peak_memory_mb": math.nan if peak is None else peak / 1e6,
                "memory": cost["memory"],
                "images": images,
                "seconds": seconds,
                "input_size": entry.get("input_size"),
                "cache_id": entry.get("cache_id"),
            }
        )
    metrics = (
        pd.DataFrame(rows)
        .sort_values("two_afc", ascending=False, kind="stable")
        .reset_index(drop=True)
    )
    by_triplet = audit.pivot(index="id", columns="metric", values="two_afc")
    pairs = []
    for better, worse in itertools.combinations(metrics["metric"], 2):
        test = paired_bootstrap(
            by_triplet[better], by_triplet[worse], rounds=rounds, level=LEVEL, seed=seed
        )
        pairs.append(
            {
                "metric_a": better,
                "metric_b": worse,
                "difference": test["difference"],
                "ci95_low": test["ci95"][0],
                "ci95_high": test["ci95"][1],
                "p_value": test["p_value"],
                "differs": bool(test["p_value"] < 1 - LEVEL),
            }
        )
    columns = ["metric_a", "metric_b", "difference", "ci95_low", "ci95_high", "p_value", "differs"]
    return Leaderboard(metrics, pd.DataFrame(pairs, columns=columns), rounds, seed)
