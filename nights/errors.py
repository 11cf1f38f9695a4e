"""The exception family of the ``nights`` package.

Every error raised on purpose by ``nights`` is a :class:`NightsError`, so callers can catch one
class. Messages say what was wrong, where it was (file, line, column, URL) and what to do.
"""

from __future__ import annotations


class NightsError(Exception):
    """Base class of every error raised by ``nights``."""


class ArgumentError(NightsError, ValueError):
    """An argument outside what it may be (a name, a format, a range), named with its value."""


class OutputExistsError(NightsError, FileExistsError):
    """The output is there already and nothing was asked to replace it."""


class SchemaError(NightsError, ValueError):
    """A CSV or table does not have the columns, types or values NIGHTS requires."""


class IntegrityError(NightsError):
    """Files on disk are missing, unreadable or differ from what was recorded."""


class ImageError(IntegrityError):
    """An image file cannot be used: missing, not an image, cut short, corrupt or too large.

    ``where`` names the file, ``problem`` says what is wrong with it.
    """

    def __init__(self, where: str, problem: str):
        super().__init__(f"{where}: {problem}")
        self.where, self.problem = where, problem

    def __reduce__(self):  # travels between processes (DataLoader and build workers)
        return type(self), (self.where, self.problem)


class DownloadError(NightsError):
    """A release could not be fetched."""


class DatasetNotFoundError(NightsError, FileNotFoundError):
    """No NIGHTS data at the place looked in."""


class MetricError(NightsError, ValueError):
    """A metric cannot be named, loaded or run: an unknown name, a plugin that fails, a
    function that returns the wrong shape."""
