"""Upstream's ``dreamsim`` distribution installed beside ours: both write ``site-packages/
dreamsim/`` (ours overwrites its ``__init__.py`` and ``model.py``, its ``feature_extraction/``
stays), and uninstalling either then breaks the other. Found at import through
``importlib.metadata`` (a name lookup, no scan of every installed distribution)."""

from __future__ import annotations

import os
from importlib import metadata

OURS = "nights"  # the distribution that ships this package


def upstream_conflict() -> str | None:
    """The warning to give when a ``dreamsim`` distribution other than ours is installed."""
    try:
        upstream = metadata.distribution("dreamsim")
    except metadata.PackageNotFoundError:
        return None
    files = upstream.files
    if files is not None and not any(str(f).startswith("dreamsim/") for f in files):
        return None  # a dreamsim distribution that does not own the package
    try:
        ours = f"`{OURS} {metadata.version(OURS)}`"
    except metadata.PackageNotFoundError:
        ours = f"this copy ({os.path.dirname(os.path.dirname(__file__))})"
    return (
        f"upstream's `dreamsim {upstream.version}` distribution is installed in "
        f"{upstream.locate_file('')} beside {ours}, and both own the `dreamsim` package: one "
        f"overwrote the other's files, and uninstalling either breaks the other. Fix: "
        f"`pip uninstall -y dreamsim && pip install --force-reinstall --no-deps {OURS}` "
        f"(or `pip install --no-deps -e .` from a checkout)"
    )
