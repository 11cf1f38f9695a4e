"""Vote statistics and vote filters (writing the result: :mod:`nights.splits`).

Example::

    >>> from nights import load_nights
    >>> from nights.votes import agreement_stats, filter_votes
    >>> table = load_nights(split="all", root=sample_root, min_votes=None)
    >>> list(agreement_stats(table, by="split").index)
    ['test', 'train', 'val']
    >>> strict = filter_votes(table, min_votes=8)
    >>> min(strict["votes"]) >= 8, len(strict) < len(table)
    (True, True)
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import ArgumentError, NightsError
from .schema import VOTE_COLUMNS
from .table import with_step

GROUPINGS = ("split", "votes", "prompt", "is_imagenet")


def votes_frame(table) -> pd.DataFrame:
    """The non-image columns of a table as a DataFrame (no image is read)."""
    return table.select_columns([c for c in VOTE_COLUMNS if c in table.column_names]).to_pandas()


def agreement_stats(table, by: str | None = "split") -> pd.DataFrame:
    """Agreement among voters, overall (``by=None``) or per split, vote count, prompt, is_imagenet.

    Columns: ``triplets``, ``votes_mean``, ``unanimous`` (share of triplets where every vote
    went one way), ``agreement`` (mean share of the majority side), ``right_share`` (mean
    ``right_vote``: near 0.5 unless sides are biased).
    """
    if by is not None and by not in GROUPINGS:
        raise ArgumentError(f"by must be one of {', '.join(GROUPINGS)} or None, not {by!r}")
    frame = votes_frame(table)
    frame["majority"] = np.maximum(frame["left_vote"], frame["right_vote"])
    keys = frame[by] if by else pd.Series("all", index=frame.index, name="group")
    grouped = frame.groupby(keys, dropna=False)
    stats = pd.DataFrame(
        {
            "triplets": grouped.size(),
            "votes_mean": grouped["votes"].mean(),
            "unanimous": grouped["majority"].apply(lambda m: float((m >= 1.0 - 1e-9).mean())),
            "agreement": grouped["majority"].mean(),
            "right_share": grouped["right_vote"].mean(),
        }
    )
    return stats.sort_index()


def read_id_file(ids: Iterable[int] | str | os.PathLike | None) -> set[int] | None:
    """Ids from a text file (one per line, ``#`` comments allowed) or from a collection."""
    if ids is None:
        return None
    if isinstance(ids, (str, os.PathLike)):
        path = Path(ids)
        result = set()
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            try:
                result.add(int(text))
            except ValueError:
                raise NightsError(f"{path}: line {number}: {text!r} is not a triplet id") from None
        return result
    return {int(i) for i in ids}


def filter_votes(
    table,
    *,
    min_votes: int | None = None,
    max_votes: int | None = None,
    min_agreement: float | None = None,
    unanimous: bool | None = None,
    ids: Iterable[int] | str | os.PathLike | None = None,
    exclude_ids: Iterable[int] | str | os.PathLike | None = None,
):
    """Rows of ``table`` that pass every given condition (a new, memory-mapped view).

    Args:
        min_votes / max_votes: bounds on the number of votes.
        min_agreement: minimum share of the majority side (0.5 .. 1).
        unanimous: True keeps unanimous triplets only, False non-unanimous only.
        ids / exclude_ids: ids to keep / drop, as a collection or a text file of ids.

    The conditions are recorded in the result's metadata and end up in ``provenance.json``
    when it is written with :func:`nights.splits.write_split`.
    """
    frame = votes_frame(table)
    mask = np.ones(len(frame), dtype=bool)
    votes = frame["votes"].fillna(-1).to_numpy()
    if min_votes is not None:
        mask &= votes >= min_votes
    if max_votes is not None:
        mask &= (votes <= max_votes) & (votes >= 0)
    majority = np.maximum(frame["left_vote"], frame["right_vote"]).to_numpy()
    if min_agreement is not None:
        if not 0.0 <= min_agreement <= 1.0:
            raise ArgumentError(f"min_agreement must be between 0 and 1, not {min_agreement}")
        mask &= majority >= min_agreement - 1e-9
    if unanimous is not None:
        mask &= (majority >= 1.0 - 1e-9) == unanimous
    keep, drop = read_id_file(ids), read_id_file(exclude_ids)
    if keep is not None:
        mask &= frame["id"].isin(keep).to_numpy()
    if drop is not None:
        mask &= ~frame["id"].isin(drop).to_numpy()
    selected = table.select(np.flatnonzero(mask), keep_in_memory=True)
    step = {
        "min_votes": min_votes,
        "max_votes": max_votes,
        "min_agreement": min_agreement,
        "unanimous": unanimous,
        "ids": sorted(keep)
        if keep is not None and len(keep) <= 1000
        else (f"{len(keep)} ids" if keep is not None else None),
        "exclude_ids": sorted(drop)
        if drop is not None and len(drop) <= 1000
        else (f"{len(drop)} ids" if drop is not None else None),
    }
    return with_step(table, selected, {k: v for k, v in step.items() if v is not None})
