"""Extending NIGHTS with new judgments: collect, import, aggregate, merge as splits.

Campaigns and their SQLite store (:mod:`annotation.campaign`), the collection app
(:mod:`annotation.server`), importers from other platforms (:mod:`annotation.importers`),
collection policies (:mod:`annotation.policies`), aggregation on crowd-kit
(:mod:`annotation.aggregate`) and one exception family (:mod:`annotation.errors`). Imports
from ``nights`` the table and its metadata, vote filtering, image checks, errors,
``write_split``, the CLI's shared options and the lazy-import helper.
"""

from nights._lazy import lazy_attributes

from .aggregate import (
    aggregate,
    keep_qualified_workers,
    krippendorff_alpha,
    merge_into_split,
    vote_counts,
    worker_quality,
)
from .errors import AnnotationError, CampaignError, ParticipantError, VoteImportError

# Loaded when first asked for: they import pandas, and `nights --help` imports annotation.cli
# (so this package) to list `nights annotate`.
__getattr__, __dir__ = lazy_attributes(
    __name__,
    {
        "VOTE_COLUMNS": "importers",
        "read_votes": "importers",
        "POLICIES": "policies",
        "BetaBinomialStop": "policies",
        "NightsScheme": "policies",
        "TargetVotes": "policies",
        "make_policy": "policies",
        "plan": "policies",
    },
)

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
    "keep_qualified_workers",
    "krippendorff_alpha",
    "make_policy",
    "merge_into_split",
    "plan",
    "read_votes",
    "vote_counts",
    "worker_quality",
]
