"""Agreement between a metric and the human votes: per triplet, then summarised.

The 2AFC score (BAPPS/LPIPS convention, NIGHTS' ``p = right_vote``) with ``d0 = d(ref, left)``
and ``d1 = d(ref, right)``: mean of ``(d0 < d1)(1 - p) + (d1 < d0) p + (d0 == d1) 0.5``.
:func:`audit_frame` turns distances into a per-triplet audit (model and human choices,
agreement, confidence, label-noise candidates), :func:`summarize` into agreement statistics with
bootstrap intervals; :func:`paired_bootstrap` says whether two metrics' scores on the same
triplets differ.

Example::

    >>> from nights.audit.stats import two_afc
    >>> two_afc(d_left=[0.1, 0.5, 0.3], d_right=[0.2, 0.4, 0.3], p_right=[0.0, 1.0, 0.7]).tolist()
    [1.0, 1.0, 0.5]
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ArgumentError, MetricError
from ..votes import votes_frame

LABEL_NOISE_MARGIN = 1.0  # in standard deviations of the metric's margins
BOOTSTRAP_DRAWS = 1 << 22  # resampled values held at once: 4M x (8 B index + 8 B value)


def two_afc(d_left, d_right, p_right) -> np.ndarray:
    """Per-triplet 2AFC score; its mean is the 2AFC score of the metric."""
    d0, d1, p = (np.asarray(x, dtype=np.float64) for x in (d_left, d_right, p_right))
    return (d0 < d1) * (1 - p) + (d1 < d0) * p + (d0 == d1) * 0.5


def _bootstrap_means(values: np.ndarray, rounds: int, seed: int) -> np.ndarray:
    """The means of ``rounds`` resamples of ``values`` (with replacement), drawn a few rounds
    at a time (:data:`BOOTSTRAP_DRAWS` resampled values at once): memory stays under ~70 MB
    however many values there are, and the draws are those of drawing every round at once."""
    rng = np.random.default_rng(seed)
    per_chunk = max(1, BOOTSTRAP_DRAWS // len(values))
    return np.concatenate(
        [
            values[
                rng.integers(0, len(values), size=(min(per_chunk, rounds - done), len(values)))
            ].mean(axis=1)
            for done in range(0, rounds, per_chunk)
        ]
    )


def _percentiles(means: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def bootstrap_interval(
    values, rounds: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean, in bounded memory (see
    :func:`_bootstrap_means`).

    Example::

        >>> low, high = bootstrap_interval([0.0, 1.0, 1.0, 1.0], rounds=200)
        >>> 0.0 <= low < 0.75 < high <= 1.0
        True
    """
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return (math.nan, math.nan)
    return _percentiles(_bootstrap_means(values, rounds, seed), level)


def paired_bootstrap(
    scores_a, scores_b, rounds: int = 1000, level: float = 0.95, seed: int = 0
) -> dict:
    """Whether two metrics' mean scores on the same triplets differ: a paired bootstrap.

    Each round resamples the triplets once and applies the draw to both metrics, so what the
    triplets share (easy and hard ones) cancels: that is resampling the per-triplet
    differences ``a - b``, in the bounded memory of :func:`bootstrap_interval`.

    Args:
        scores_a / scores_b: per-triplet scores (e.g. 2AFC) of two metrics, triplet by triplet.
        rounds / level / seed: the bootstrap's; the same seed gives the same answer.

    Returns:
        ``difference`` (mean of ``a - b``), ``ci95`` (its percentile interval at ``level``),
        ``p_value`` (two-sided: twice the smaller share of resampled differences on either
        side of 0, counting the observed one, ``2 (min(n <= 0, n >= 0) + 1) / (rounds + 1)``,
        at most 1) and ``rounds``.

    Example::

        >>> from nights.audit.stats import paired_bootstrap
        >>> same = paired_bootstrap([1.0, 0.0, 1.0], [1.0, 0.0, 1.0], rounds=100)
        >>> same["difference"], same["ci95"], same["p_value"]
        (0.0, [0.0, 0.0], 1.0)
    """
    a, b = (np.asarray(x, dtype=np.float64) for x in (scores_a, scores_b))
    if a.shape != b.shape:
        raise ArgumentError(f"paired scores need the same triplets: {len(a)} and {len(b)} values")
    if len(a) == 0:
        return {
            "difference": math.nan,
            "ci95": [math.nan, math.nan],
            "p_value": math.nan,
            "rounds": rounds,
        }
    means = _bootstrap_means(a - b, rounds, seed)
    on_one_side = min(int((means <= 0).sum()), int((means >= 0).sum()))
    return {
        "difference": float((a - b).mean()),
        "ci95": list(_percentiles(means, level)),
        "p_value": min(1.0, 2 * (on_one_side + 1) / (rounds + 1)),
        "rounds": rounds,
    }


def jnd_average_precision(distances, same) -> float:
    """LPIPS-style JND score: pairs sorted by increasing distance, precision/recall of "same"
    answers, VOC average precision (area under the interpolated precision-recall curve)."""
    order = np.argsort(np.asarray(distances, dtype=np.float64), kind="stable")
    same = np.asarray(same, dtype=np.float64)[order]
    if same.sum() == 0:
        return math.nan
    true_positive = np.cumsum(same)
    false_positive = np.cumsum(1 - same)
    recall = true_positive / same.sum()
    precision = true_positive / np.maximum(true_positive + false_positive, np.finfo(float).eps)
    recall = np.concatenate([[0.0], recall, [1.0]])
    precision = np.concatenate([[0.0], precision, [0.0]])
    for i in range(len(precision) - 2, -1, -1):
        precision[i] = max(precision[i], precision[i + 1])
    changes = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[changes + 1] - recall[changes]) * precision[changes + 1]))


def fit_vote_likelihood(margin, p_right, votes) -> dict:
    """Binomial log-likelihood of the vote counts under ``P(right) = sigmoid(k * margin)``.

    ``margin = d_left - d_right`` (positive: the right image is closer). ``k`` is fitted by
    maximum likelihood (Newton steps on a scalar). Returns ``k``, the mean log-likelihood per
    vote and that of a 50/50 guess, for comparison across metrics (Hepburn et al. 2024 argue
    for soft-label measures like this when vote counts vary).
    """
    margin = np.asarray(margin, dtype=np.float64)
    votes = np.asarray(votes, dtype=np.float64)
    right = np.round(np.asarray(p_right, dtype=np.float64) * votes)
    keep = votes > 0
    margin, votes, right = margin[keep], votes[keep], right[keep]
    if not len(votes):
        return {"k": math.nan, "log_likelihood_per_vote": math.nan, "chance": math.log(0.5)}
    scale = np.std(margin) or 1.0
    x = margin / scale
    k = 0.0
    for _ in range(50):
        q = 1 / (1 + np.exp(-k * x))
        gradient = np.sum(x * (right - votes * q))
        curvature = np.sum(votes * q * (1 - q) * x * x) + 1e-12
        step = gradient / curvature
        k += float(np.clip(step, -10, 10))
        if abs(step) < 1e-10:
            break
    q = np.clip(1 / (1 + np.exp(-k * x)), 1e-12, 1 - 1e-12)
    log_likelihood = np.sum(right * np.log(q) + (votes - right) * np.log(1 - q))
    return {
        "k": k / scale,
        "log_likelihood_per_vote": float(log_likelihood / votes.sum()),
        "chance": math.log(0.5),
    }


def _choice(values: np.ndarray) -> np.ndarray:
    """'right' where positive, 'left' where negative, 'tie' at zero."""
    return np.where(values > 0, "right", np.where(values < 0, "left", "tie"))


def audit_frame(scores: pd.DataFrame, table) -> pd.DataFrame:
    """One row per (triplet, metric): distances, choices, agreement, confidence, flags.

    ``margin = d_left - d_right`` (positive: the model finds the right image closer);
    ``human_choice`` is the majority side (``tie`` at 50/50); ``two_afc`` the soft-target
    score; ``confidence`` the fitted probability of the model's choice (see
    :func:`fit_vote_likelihood`); ``label_noise_candidate`` marks confident disagreements with
    unanimous humans (margin over one standard deviation of the metric's margins). Without
    votes the human columns are null.
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


def _group_stats(frame: pd.DataFrame, rounds: int, seed: int) -> dict:
    low, high = bootstrap_interval(frame["two_afc"], rounds, seed=seed)
    return {
        "triplets": len(frame),
        "two_afc": float(frame["two_afc"].mean()),
        "ci95": [low, high],
        "agree": float(frame["agree"].mean()),
    }


def summarize(
    audit: pd.DataFrame, rounds: int = 1000, jnd: dict | None = None, seed: int = 0
) -> dict:
    """Agreement per metric: overall and by split, is_imagenet, prompt and vote count, with
    bootstrap 95% intervals (``rounds`` rounds from ``seed``); the vote likelihood; JND average
    precision when given."""
    summary: dict = {"metrics": {}}
    for metric, part in audit.groupby("metric", sort=False):
        entry: dict = {"triplets": len(part)}
        if "two_afc" in part:
            entry["overall"] = _group_stats(part, rounds, seed)
            for column in ("split", "is_imagenet", "prompt", "votes"):
                entry[f"by_{column}"] = {
                    str(value): _group_stats(group, rounds, seed)
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
    return "\n".join(lines + fidelity_lines(summary))


def fidelity_lines(summary: dict) -> list[str]:
    """What a reduced precision or another backend changed against fp32, a line per set of
    triplets (see :mod:`nights.audit.fidelity`); none for exact metrics."""
    lines = []
    for metric, entry in summary["metrics"].items():
        if "fidelity" not in entry:
            continue
        lines.append(f"{metric} at {entry['precision']} on {entry['backend']}, against fp32:")
        for name, report in entry["fidelity"].items():
            change = report["two_afc_change"]
            lines.append(
                f"  {name}: {report['triplets']} triplets, max |d - d_fp32| "
                f"{report['max_abs_distance_difference']:.4f}, {report['flipped']} decisions "
                f"flipped ({report['flipped_share']:.1%})"
                + ("" if change is None else f", 2AFC change {change:+.4f}")
            )
    return lines


def iter_label_noise_ids(
    audit_path: Path, max_margin: float, metric: str | None = None
) -> Iterator[int]:
    """Ids where the model disagrees with the humans by more than ``max_margin`` standard
    deviations (the first metric of the audit unless ``metric`` is given)."""
    audit = pd.read_parquet(audit_path)
    metric = metric or audit["metric"].iloc[0]
    part = audit[audit["metric"] == metric]
    if part.empty:
        raise MetricError(
            f"{audit_path} has no metric {metric!r} (it has {', '.join(audit['metric'].unique())})"
        )
    flagged = part[~part["agree"].astype(bool) & (part["normalized_margin"] > max_margin)]
    yield from (int(i) for i in flagged["id"])
