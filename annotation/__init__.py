"""Extending NIGHTS with new judgments: import votes, aggregate them, merge them as splits.

Delivered so far: importers (MTurk batch results, Label Studio pairwise exports, plain CSV) into
one vote table, collection policies (the NIGHTS scheme, a Beta-binomial stopping rule),
aggregation on crowd-kit (majority, Dawid-Skene, GLAD), worker quality checks, Krippendorff's
alpha, and merging into a split with provenance. The self-hosted collection app is not built
yet (issue 7).
"""

from .aggregate import aggregate, krippendorff_alpha, merge_into_split, vote_counts, worker_quality
from .importers import VOTE_COLUMNS, VoteImportError, read_votes
from .policies import BetaBinomialStop, NightsScheme, plan

__all__ = [
    "VOTE_COLUMNS",
    "BetaBinomialStop",
    "NightsScheme",
    "VoteImportError",
    "aggregate",
    "krippendorff_alpha",
    "merge_into_split",
    "plan",
    "read_votes",
    "vote_counts",
    "worker_quality",
]
