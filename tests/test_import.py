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
