"""Extending NIGHTS with new judgments: collect, import, aggregate, merge as splits.

Campaigns and their SQLite store (:mod:`annotation.campaign`), the collection app
(:mod:`annotation.server`), importers from other platforms (:mod:`annotation.importers`),
collection policies (:mod:`annotation.policies`), aggregation on crowd-kit
(:mod:`annotation.aggregate`) and one exception family (:mod:`annotation.errors`). Imports
``nights`` for the table, image checks, errors and ``write_split`` only.
"""

from .aggregate import aggregate, krippendorff_alpha, merge_into_split, vote_counts, worker_quality
from .errors import AnnotationError, CampaignError, ParticipantError, VoteImportError
from .importers import VOTE_COLUMNS, read_votes
from .policies import POLICIES, BetaBinomialStop, NightsScheme, TargetVotes, make_policy, plan

__all__ = [
    "POLICIES",
    "VOTE_COLUMNS",
    "AnnotationError",
    "BetaBinomialStop",
    "CampaignError",
    "NightsScheme",
    "ParticipantError",
    "TargetVotes",
    "VoteImportError",
    "aggregate",
    "krippendorff_alpha",
    "make_policy",
    "merge_into_split",
    "plan",
    "read_votes",
    "vote_counts",
    "worker_quality",
]
