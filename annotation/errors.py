"""The exception family of the ``annotation`` package.

Every error it raises on purpose is an :class:`AnnotationError`, itself a
:class:`nights.NightsError`, so the ``nights`` command line prints it as one line. Messages say
what was wrong, where (file, line, participant, trial) and what to do.
"""

from __future__ import annotations

from nights.errors import NightsError, SchemaError


class AnnotationError(NightsError):
    """Base class of every error raised by ``annotation``."""


class CampaignError(AnnotationError):
    """A campaign that cannot be created or opened (bad settings, unservable images, a file
    that is not a campaign database); the message names the file."""


class ParticipantError(AnnotationError):
    """A request of (or about) a participant that the campaign refuses: an unknown
    participant, a trial not theirs or not yet theirs, an answer after their time ran out.
    ``status`` is the HTTP status the collection app answers with (always a 4xx)."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


class VoteImportError(AnnotationError, SchemaError):
    """A votes file that cannot be imported; the message names the file and the row."""
