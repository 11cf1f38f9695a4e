"""Extending NIGHTS with new judgments: collect, import, aggregate, merge as splits.

Campaigns and their SQLite store (:mod:`annotation.campaign`), the collection app
(:mod:`annotation.server`), importers from other platforms (:mod:`annotation.importers`),
collection policies (:mod:`annotation.policies`) and aggregation on crowd-kit
(:mod:`annotation.aggregate`). Imports ``nights`` for the table and ``write_split`` only.
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
