"""Collection policies: which triplets need another vote.

A policy is a small frozen class with documented hyperparameters and one question,
``needs_more(left, right)``: given the votes so far for each side, should the triplet get
another one? The app asks it when it assigns trials, ``nights annotate plan`` when it lists
what is left. :data:`POLICIES` names them; :func:`make_policy` builds one from its name.

* :class:`TargetVotes`: every triplet gets ``max_votes`` votes.
* :class:`NightsScheme`, the scheme NIGHTS was collected with: keep asking while the votes stay
  unanimous, up to ``max_votes``; stop at the first disagreement.
* :class:`BetaBinomialStop`: a Beta(1, 1) prior on the share choosing the right image; stop
  once the posterior puts more than ``confidence`` on one side of 1/2, or at ``max_votes``.

Example::

    >>> from annotation.policies import NightsScheme, make_policy
    >>> NightsScheme(max_votes=10).needs_more(left=3, right=0)
    True
    >>> NightsScheme(max_votes=10).needs_more(left=3, right=1)
    False
    >>> make_policy("target", max_votes=2).needs_more(left=1, right=1)
    False
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from .errors import AnnotationError


@dataclass(frozen=True)
class TargetVotes:
    """A fixed number of votes per triplet.

    Args:
        max_votes: votes each triplet gets.
    """

    max_votes: int = 5

    def needs_more(self, left: int, right: int) -> bool:
        return left + right < self.max_votes


@dataclass(frozen=True)
class NightsScheme:
    """NIGHTS' rounds: another vote while all votes agree.

    Args:
        max_votes: the most votes a triplet gets, however unanimous.
    """

    max_votes: int = 10

    def needs_more(self, left: int, right: int) -> bool:
        total = left + right
        return total < self.max_votes and (left == 0 or right == 0)


@dataclass(frozen=True)
class BetaBinomialStop:
    """A Bayesian stopping rule on the share of votes for the right image.

    Args:
        confidence: stop once P(share > 1/2) or P(share < 1/2) exceeds it.
        max_votes: the most votes a triplet gets, decided or not.
        min_votes: votes every triplet gets before the rule is asked.
    """

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


POLICIES = {"target": TargetVotes, "nights": NightsScheme, "beta": BetaBinomialStop}


def make_policy(name: str, max_votes: int):
    """The policy called ``name`` (a key of :data:`POLICIES`) capped at ``max_votes``.

    Raises:
        AnnotationError: no policy has that name.
    """
    if name not in POLICIES:
        raise AnnotationError(f"policy must be one of {', '.join(POLICIES)}, not {name!r}")
    return POLICIES[name](max_votes=max_votes)


def plan(votes: pd.DataFrame, tasks, policy) -> pd.DataFrame:
    """For every task: counts so far and whether the policy asks for another vote."""
    counts = votes.groupby(["task", "label"]).size().unstack(fill_value=0)
    counts = counts.reindex(index=list(tasks), columns=["left", "right"], fill_value=0)
    counts["needs_more"] = [
        policy.needs_more(int(row.left), int(row.right)) for row in counts.itertuples()
    ]
    return counts
