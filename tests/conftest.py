"""Fixtures of the test suite (the private homes, the loopback guard and ``sample_home``, shared
with the docstring examples, are in the repository's conftest.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DEMO_IMAGES = SHARED / "data" / "dreamsim_demo"
# A metric plugin package that the tests install (tests/test_metrics.py), not test code.
collect_ignore = ["plugins"]
CHROMIUM = Path("/usr/bin/chromium")  # Debian's; no test downloads a browser of its own
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def launch_chromium(driver):
    """Headless Debian Chromium for Playwright, with the flags this closed network needs."""
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed (apt-get install chromium)")
    ARTIFACTS.mkdir(exist_ok=True)
    return driver.chromium.launch(
        executable_path=str(CHROMIUM),
        args=[
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ],
    )


@pytest.fixture
def sample_copy(sample_home, tmp_path) -> Path:
    """A private copy of the sample that a test may damage."""
    target = tmp_path / "home"
    shutil.copytree(sample_home, target)
    return target


@pytest.fixture
def cache_dir(tmp_path) -> Path:
    """A fresh table cache, so builds in one test never reuse another test's tables."""
    return tmp_path / "tables"
