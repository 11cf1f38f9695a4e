"""The exception family of ``dreamsim``: every error raised on purpose is a DreamSimError.

Importing this module costs nothing (no torch), so callers can catch these cheaply.
"""


class DreamSimError(Exception):
    """Base class of the errors raised by ``dreamsim``."""


class CheckpointError(DreamSimError, FileNotFoundError):
    """A checkpoint file is missing, corrupt or not what the variant needs."""


class VariantError(DreamSimError, ValueError):
    """An unknown variant name, or an option the variant does not offer."""
