"""Extending NIGHTS with new judgments: collect, import, aggregate, merge as splits.

Campaigns and their SQLite store (:mod:`annotation.campaign`), the collection app
(:mod:`annotation.server`), importers from other platforms (:mod:`annotation.importers`),
collection policies (:mod:`annotation.policies`), aggregation on crowd-kit
(:mod:`annotation.aggregate`) and one exception family (:mod:`annotation.errors`). Imports
``nights`` for the table, image checks, errors and ``write_split`` only.
"""

import importlib

from .aggregate import aggregate, krippendorff_alpha, merge_into_split, vote_counts, worker_quality
from .errors import AnnotationError, CampaignError, ParticipantError, VoteImportError

# Loaded when first asked for: they import pandas, and `nights --help` imports annotation.cli
# (so this package) to list `nights annotate`.
_LAZY = {
    "VOTE_COLUMNS": "importers",
    "read_votes": "importers",
    "POLICIES": "policies",
    "BetaBinomialStop": "policies",
    "NightsScheme": "policies",
    "TargetVotes": "policies",
    "make_policy": "policies",
    "plan": "policies",
}

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


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'annotation' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
