"""Collection policies: which triplets need another vote.

* :class:`NightsScheme`, the scheme NIGHTS was collected with: keep asking while the votes stay
  unanimous, up to ``max_votes``; stop at the first disagreement.
* :class:`BetaBinomialStop`: a Beta(1, 1) prior on the share choosing the right image; stop
  once the posterior puts more than ``confidence`` on one side of 1/2, or at ``max_votes``.

Example::

    >>> from annotation.policies import NightsScheme
    >>> NightsScheme(max_votes=10).needs_more(left=3, right=0)
    True
    >>> NightsScheme(max_votes=10).needs_more(left=3, right=1)
    False
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class NightsScheme:
    max_votes: int = 10

    def needs_more(self, left: int, right: int) -> bool:
        total = left + right
        return total < self.max_votes and (left == 0 or right == 0)


@dataclass(frozen=True)
class BetaBinomialStop:
    confidence: float = 0.95
    max_votes: int = 20
    min_votes: int = 3

    def posterior_right(self, left: int, right: int) -> float:
        """P(share choosing right > 1/2 | votes) under a Beta(1, 1) prior."""
        from scipy.stats import beta

        return float(beta.sf(0.5, 1 + right, 1 + left))

    def needs_more(self, left: int, right: int) -> bool:
        total = left + right
        if total >= self.max_votes:
            return False
        if total < self.min_votes:
            return True
        p = self.posterior_right(left, right)
        return max(p, 1 - p) < self.confidence


def plan(votes: pd.DataFrame, tasks, policy) -> pd.DataFrame:
    """For every task: counts so far and whether the policy asks for another vote."""
    counts = votes.groupby(["task", "label"]).size().unstack(fill_value=0)
    counts = counts.reindex(index=list(tasks), columns=["left", "right"], fill_value=0)
    counts["needs_more"] = [
        policy.needs_more(int(row.left), int(row.right)) for row in counts.itertuples()
    ]
    return counts
