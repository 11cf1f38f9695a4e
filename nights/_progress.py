"""The one progress bar: every long function takes ``progress`` and passes it here."""

from __future__ import annotations


def progress_bar(iterable=None, *, progress: bool | None, **options):
    """A tqdm bar over ``iterable`` (or a manual one, with ``total=``): shown when ``progress``
    is True, hidden when False and, when None, shown only when stderr is a terminal.

    Example::

        >>> with progress_bar(total=3, progress=False, desc="demo") as bar:
        ...     bar.update(3)
        >>> sum(progress_bar(range(4), progress=False))
        6
    """
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=None if progress is None else not progress, **options)
