"""The triplets of a run: tables opened from the config, and the order of every epoch.

Each optimizer step takes ``batch_size`` triplets of a permutation drawn from the seed and the
epoch; with several processes each takes a contiguous share of those, so that the step sees the
same triplets whatever the number of processes (the gradient is their sum over the step, see
:mod:`nights.train.engine`). Images come from the table pre-resized to the model's input size,
through :func:`nights.torch_data.to_torch`: nothing is decoded at full size in the loop.

Example::

    >>> from nights.train.data import epoch_steps, local_share
    >>> steps = epoch_steps(triplets=10, batch_size=4, processes=2, seed=1234, epoch=0)
    >>> [len(step) for step in steps]  # the last step of 2 triplets: one for each process
    [4, 4, 2]
    >>> [len(local_share(steps[0], rank, 2)) for rank in (0, 1)]
    [2, 2]
"""

from __future__ import annotations

import logging

import numpy as np

from ..errors import TrainError
from ..schema import IMAGE_COLUMNS
from ..table import load_nights, release_or_sample, table_meta
from .config import Rows

logger = logging.getLogger(__name__)


def open_rows(section: str, rows, image_size: int, progress: bool | None):
    """The table of a config section (:class:`~nights.train.config.Rows`, or a table given in
    code) with the images at ``image_size``, and words that name it in messages.

    Raises:
        TrainError: the rows have no votes, or no row is left.
    """
    if isinstance(rows, Rows):
        root = release_or_sample(rows.root)
        where = f"split {rows.split!r} of {root} (min_votes={rows.min_votes})"
        table = load_nights(
            rows.split,
            root=root,
            min_votes=rows.min_votes,
            image_size=image_size,
            progress=progress,
        )
        if rows.limit:
            table = table.select(range(min(rows.limit, len(table))))
    else:
        table = rows
        source = table_meta(table)
        where = f"the {section} table ({source.get('csv_path', 'given in code')})"
        if source.get("image_size") != image_size:
            logger.warning(
                "%s holds images at their own size: each is decoded and resized in the loop; "
                "load it with load_nights(..., image_size=%d) for the fast path",
                where,
                image_size,
            )
    check_triplets(section, table, where)
    return table, where


def check_triplets(section: str, table, where: str) -> None:
    """Refuses a table the run cannot use, in one line naming it and what to do."""
    missing = [c for c in ("id", *IMAGE_COLUMNS) if c not in table.column_names]
    if missing:
        raise TrainError(f"{section}: {where} has no column {', '.join(missing)}")
    if "right_vote" not in table.column_names or "votes" not in table.column_names:
        raise TrainError(
            f"{section}: {where} has no votes (right_vote, votes): training and validation "
            "need 2AFC votes; aggregate a campaign into a split first (`nights annotate "
            "aggregate --out DIR`)"
        )
    if len(table) == 0:
        raise TrainError(
            f"{section}: {where} has no triplet; the warning above names the filter that "
            "removed them (pass min_votes: null, --min-votes 0, to keep every row)"
        )
    votes = table.select_columns(["id", "right_vote"]).to_pandas()
    unvoted = votes[votes["right_vote"].isna()]
    if len(unvoted):
        raise TrainError(
            f"{section}: {where}: triplet {int(unvoted['id'].iloc[0])} (and "
            f"{len(unvoted) - 1} more) has no votes; filter them out or collect their votes"
        )


def epoch_steps(
    triplets: int, batch_size: int, processes: int, seed: int, epoch: int
) -> list[np.ndarray]:
    """Row positions of each optimizer step of ``epoch``: ``batch_size`` of a permutation drawn
    from ``(seed, epoch)``; a last step with fewer triplets than processes is left out."""
    order = np.random.default_rng([seed, epoch]).permutation(triplets)
    steps = [order[start : start + batch_size] for start in range(0, triplets, batch_size)]
    return [step for step in steps if len(step) >= processes]


def local_share(step: np.ndarray, rank: int, processes: int) -> np.ndarray:
    """The part of a step that process ``rank`` computes (contiguous, sizes differ by 1 at
    most)."""
    return np.array_split(step, processes)[rank]


class LocalShares:
    """A DataLoader batch sampler: this process's share of each step, from ``first`` on."""

    def __init__(self, steps: list[np.ndarray], first: int, rank: int, processes: int):
        self.shares = [local_share(step, rank, processes).tolist() for step in steps[first:]]

    def __iter__(self):
        return iter(self.shares)

    def __len__(self) -> int:
        return len(self.shares)
