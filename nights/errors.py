"""The exception family of the ``nights`` package.

Every error raised on purpose by ``nights`` is a :class:`NightsError`, so callers can catch one
class. Messages say what was wrong, where it was (file, line, column, URL) and what to do.
"""

from __future__ import annotations


class NightsError(Exception):
    """Base class of every error raised by ``nights``."""


class SchemaError(NightsError, ValueError):
    """A CSV or table does not have the columns, types or values NIGHTS requires."""


class IntegrityError(NightsError):
    """Files on disk are missing, unreadable or differ from what was recorded."""


class DownloadError(NightsError):
    """A release could not be fetched."""


class DatasetNotFoundError(NightsError, FileNotFoundError):
    """No NIGHTS data at the place looked in."""
