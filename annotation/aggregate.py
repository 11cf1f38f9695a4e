"""From a vote table to per-triplet votes, agreement and worker quality, on crowd-kit.

Example::

    >>> from annotation.importers import read_votes
    >>> from annotation.aggregate import aggregate, worker_quality, krippendorff_alpha
    >>> votes = read_votes("batch_results.csv")                       # doctest: +SKIP
    >>> quality = worker_quality(votes, min_rt_ms=800)                # doctest: +SKIP
    >>> kept = votes[~votes["worker"].isin(quality.index[quality["excluded"]])]  # doctest: +SKIP
    >>> per_triplet = aggregate(kept, method="dawid_skene")           # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import AnnotationError

if TYPE_CHECKING:  # loaded by the functions: `nights --help` imports this package
    import pandas as pd

METHODS = ("majority", "dawid_skene", "glad")


def vote_counts(votes: pd.DataFrame) -> pd.DataFrame:
    """Per task: ``votes``, ``left_vote``, ``right_vote`` (fractions of the stored sides)."""
    import pandas as pd

    counts = votes.groupby(["task", "label"]).size().unstack(fill_value=0)
    for side in ("left", "right"):
        if side not in counts:
            counts[side] = 0
    total = counts["left"] + counts["right"]
    return pd.DataFrame(
        {
            "votes": total.astype("int64"),
            "left_vote": counts["left"] / total,
            "right_vote": counts["right"] / total,
        }
    )


def aggregate(votes: pd.DataFrame, method: str = "majority", n_iter: int = 100) -> pd.DataFrame:
    """Per task: the raw counts (:func:`vote_counts`) and the method's ``p_right`` and
    ``label`` (majority vote, Dawid-Skene or GLAD from crowd-kit)."""
    import numpy as np
    import pandas as pd
    from crowdkit.aggregation import GLAD, DawidSkene, MajorityVote

    if method not in METHODS:
        raise AnnotationError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    if votes.empty:
        raise AnnotationError("no votes to aggregate")
    data = votes[["task", "worker", "label"]].astype({"worker": str, "label": str})
    model = {
        "majority": lambda: MajorityVote(),
        "dawid_skene": lambda: DawidSkene(n_iter),
        "glad": lambda: GLAD(n_iter=n_iter),
    }[method]().fit(data)
    probabilities = model.probas_
    result = vote_counts(votes)
    p_right = probabilities.get("right", 0.0)
    result["p_right"] = pd.Series(p_right, index=probabilities.index).reindex(result.index)
    result["label"] = np.where(
        result["p_right"] > 0.5, "right", np.where(result["p_right"] < 0.5, "left", "tie")
    )
    return result


def krippendorff_alpha(votes: pd.DataFrame) -> float:
    """Nominal Krippendorff's alpha from per-task value counts (crowd voters barely overlap)."""
    import krippendorff

    counts = votes.groupby(["task", "label"]).size().unstack(fill_value=0)
    counts = counts.reindex(columns=["left", "right"], fill_value=0)
    counts = counts[counts.sum(axis=1) >= 2]
    if counts.empty:
        return float("nan")
    return float(krippendorff.alpha(value_counts=counts.to_numpy(), level_of_measurement="nominal"))


def worker_quality(
    votes: pd.DataFrame,
    sentinels: dict[int, str] | None = None,
    min_sentinel_accuracy: float = 0.8,
    min_consistency: float = 0.7,
    min_rt_ms: float | None = None,
) -> pd.DataFrame:
    """One row per worker: answers, sentinel accuracy, self-consistency on repeated tasks,
    median response time (``median_rt_ms``, as the client reported it, and
    ``median_server_ms``, as the server measured it, for campaign votes), and ``excluded``
    with the reasons.

    Sentinels (answer known: one candidate is the reference) come from ``sentinels`` (task id
    -> correct side) or, for a campaign export, from the rows of kind ``sentinel`` with their
    ``expected`` side. Self-consistency is the share of tasks answered more than once (kinds
    ``2afc``/``repeat`` in an export) that got the same answer every time. A worker is a
    speeder when their median time is under ``min_rt_ms``: the server's time when the votes
    have it (a client can report any ``rt_ms``), the reported one otherwise.
    """
    import numpy as np
    import pandas as pd

    kind = votes["kind"] if "kind" in votes else pd.Series("2afc", index=votes.index)
    if "expected" in votes and (kind == "sentinel").any():
        checks = votes[kind == "sentinel"]
        checks = checks.assign(correct=checks["label"] == checks["expected"])
    elif sentinels:
        checks = votes[votes["task"].isin(sentinels)]
        checks = checks.assign(correct=checks["label"] == checks["task"].map(sentinels))
    else:
        checks = None
    judged = votes[kind.isin(["2afc", "repeat"])]
    rows = []
    for worker, answers in votes.groupby("worker"):
        row = {"worker": worker, "answers": len(answers)}
        if checks is not None:
            own = checks[checks["worker"] == worker]
            row["sentinel_accuracy"] = float(own["correct"].mean()) if len(own) else np.nan
        repeated = (
            judged[judged["worker"] == worker].groupby("task")["label"].agg(["nunique", "size"])
        )
        repeated = repeated[repeated["size"] > 1]
        row["consistency"] = float((repeated["nunique"] == 1).mean()) if len(repeated) else np.nan
        row["median_rt_ms"] = _median(answers, "rt_ms")
        if "server_ms" in votes:
            row["median_server_ms"] = _median(answers, "server_ms")
        speed = row.get("median_server_ms", np.nan)
        speed = row["median_rt_ms"] if np.isnan(speed) else speed
        reasons = []
        if checks is not None and row["sentinel_accuracy"] < min_sentinel_accuracy:
            reasons.append("sentinels")
        if row["consistency"] < min_consistency:
            reasons.append("inconsistent")
        if min_rt_ms is not None and speed < min_rt_ms:
            reasons.append("speeder")
        row["excluded"] = bool(reasons)
        row["reasons"] = ",".join(reasons)
        rows.append(row)
    return pd.DataFrame(rows).set_index("worker")


def keep_qualified_workers(
    votes: pd.DataFrame, min_rt_ms: float | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The 2AFC answers of the workers who pass :func:`worker_quality` (sentinels and repeats
    when the votes come from a campaign export, speed always), and the quality rows of the
    workers left out (their ``reasons`` say why)."""
    quality = worker_quality(votes, min_rt_ms=min_rt_ms)
    flagged = quality[quality["excluded"]]
    if "kind" in votes:
        votes = votes[votes["kind"] == "2afc"]
    return votes[~votes["worker"].isin(flagged.index)], flagged


def _median(answers: pd.DataFrame, column: str) -> float:
    import numpy as np
    import pandas as pd

    values = pd.to_numeric(answers[column], errors="coerce")
    return float(values.median()) if values.notna().any() else np.nan


def merge_into_split(
    table,
    per_triplet: pd.DataFrame,
    out,
    *,
    format: str = "nights",
    note: str | None = None,
    **options,
):
    """Writes the triplets of ``per_triplet`` with their new votes as a split (via
    :func:`nights.splits.write_split`, provenance included). ``table`` is the triplet table the
    tasks refer to (``nights.load_nights("all", min_votes=None)``)."""
    from nights.splits import write_split
    from nights.table import table_meta, with_step
    from nights.votes import filter_votes

    ids = [int(i) for i in per_triplet.index]
    missing = sorted(set(ids) - set(table["id"]))
    if missing:
        raise AnnotationError(
            f"{len(missing)} voted triplet(s) are not in the table, e.g. id {missing[0]}"
        )
    subset = filter_votes(table, ids=ids).flatten_indices()
    order = per_triplet.reindex(subset["id"])
    for column in ("left_vote", "right_vote", "votes"):
        subset = subset.remove_columns(column).add_column(column, order[column].tolist())
    subset.info.description = filter_votes(table, ids=ids).info.description
    step = {"votes_from": "annotation", "triplets": len(ids), "votes": int(order["votes"].sum())}
    subset = with_step(subset, subset, step) if table_meta(subset) else subset
    return write_split(subset, out, format=format, note=note, **options)
