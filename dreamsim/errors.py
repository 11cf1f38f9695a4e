"""The exception family of ``dreamsim``: every error raised on purpose is a DreamSimError."""


class DreamSimError(Exception):
    """Base class of the errors raised by ``dreamsim``."""


class CheckpointError(DreamSimError, FileNotFoundError):
    """A checkpoint file is missing, corrupt or not what the variant needs."""
