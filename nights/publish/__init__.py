"""NIGHTS as a Hugging Face Hub dataset: write the repository folder, check it, push it.

:func:`write_hub_folder` writes a dataset repository folder: one config per variant
(``default``: the 20k release with ``train``/``val``/``test``; ``unfiltered``; ``jnd``) or per
filtered split set (folders written by :func:`nights.votes.write_split`), Parquet shards with
the original PNG bytes embedded as ``datasets`` Image features and every column of the table,
a dataset card generated from ``provenance.json``. ``datasets.load_dataset(folder, CONFIG)``
reads it exactly as the Hub will, and so does :func:`nights.load_nights` (``root=folder`` or
``root="hf://datasets/OWNER/NAME"``). :func:`validate_hub_folder` checks a folder before
:func:`push_folder` uploads it; :func:`push_fiftyone` shares a FiftyOne dataset through
FiftyOne's own Hub integration.

Example::

    >>> from nights.publish import push_folder, write_hub_folder
    >>> result = write_hub_folder("nights-hub", root="~/.cache/nights")      # doctest: +SKIP
    >>> print(result.summary())                                              # doctest: +SKIP
    >>> push_folder("nights-hub", "OWNER/nights")                            # doctest: +SKIP
"""

from ._card import render_card
from ._folder import HubCheck, PublishResult, SplitSet, validate_hub_folder, write_hub_folder
from ._push import PushResult, push_fiftyone, push_folder

__all__ = [
    "HubCheck",
    "PublishResult",
    "PushResult",
    "SplitSet",
    "push_fiftyone",
    "push_folder",
    "render_card",
    "validate_hub_folder",
    "write_hub_folder",
]
