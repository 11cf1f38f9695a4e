"""Where NIGHTS data and caches live on disk."""

from __future__ import annotations

import os
from pathlib import Path

DATA_CSV = "data.csv"
RAW_CSV = "nights_raw.csv"
JND_CSV = "jnd_votes.csv"

# Sub-folders of NIGHTS_HOME, named as the releases extract.
NIGHTS_DIR = "nights"
UNFILTERED_DIR = "nights_unfiltered"


def nights_home() -> Path:
    """The data folder: ``$NIGHTS_HOME`` or ``~/.cache/nights``."""
    return Path(os.environ.get("NIGHTS_HOME") or Path.home() / ".cache" / "nights").expanduser()


def table_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where built Arrow tables are kept (``NIGHTS_HOME/tables`` unless given)."""
    return Path(cache_dir).expanduser() if cache_dir else nights_home() / "tables"
