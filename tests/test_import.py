"""Importing the packages is cheap: no torch, datasets, fiftyone or network at import."""

from __future__ import annotations

import subprocess
import sys


def test_import_nights_loads_no_heavy_library():
    code = (
        "import sys, nights; heavy = [m for m in ('torch', 'datasets', 'fiftyone', "
        "'open_clip', 'peft') if m in sys.modules]; print(heavy)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def _imported(*arguments: str) -> set[str]:
    """The top-level packages ``python -X importtime -m nights.cli ARGUMENTS`` imports."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "nights.cli", *arguments],
        capture_output=True,
        text=True,
        check=True,
    )
    return {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    }


def test_nights_help_loads_no_heavy_library():
    loaded = _imported("--help")
    assert "annotation" in loaded  # its commands are listed: the entry point was loaded
    heavy = {"torch", "pandas", "numpy", "pyarrow", "datasets", "PIL", "fiftyone", "dreamsim"}
    assert not heavy & loaded


def test_nights_info_loads_no_torch(sample_home):
    loaded = _imported("info", "--root", str(sample_home), "--quiet")
    assert "datasets" in loaded and "torch" not in loaded


def test_nights_imports_without_fcntl():
    """fcntl exists on POSIX only: the lock comes from filelock, imported when a lock is taken."""
    code = (
        "import sys; sys.modules['fcntl'] = None\n"
        "import nights.table, nights.download, nights.score_cache, nights.synthetic\n"
        "print('imported')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "imported", result.stderr
