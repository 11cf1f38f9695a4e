"""Shared fixtures: a private NIGHTS_HOME per test session and small synthetic samples."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from nights.synthetic import make_synthetic_nights

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DEMO_IMAGES = SHARED / "data" / "dreamsim_demo"
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


@pytest.fixture(autouse=True)
def _private_homes(tmp_path_factory, monkeypatch):
    """No test reads or writes the user's caches."""
    home = tmp_path_factory.getbasetemp() / "nights_home"
    monkeypatch.setenv("NIGHTS_HOME", str(home))
    monkeypatch.setenv("DREAMSIM_HOME", str(tmp_path_factory.getbasetemp() / "dreamsim_home"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path_factory.getbasetemp() / "hf_cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path_factory.getbasetemp() / "hf_hub_cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch):
    """Tests talk to servers they start on 127.0.0.1 and to nothing else."""
    real_connect = socket.socket.connect

    def connect(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if self.family in (socket.AF_INET, socket.AF_INET6) and host not in (
            "127.0.0.1",
            "::1",
            "localhost",
        ):
            raise AssertionError(f"a test tried to reach {address}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


@pytest.fixture(scope="session")
def sample_home(tmp_path_factory) -> Path:
    """A read-only synthetic NIGHTS home (120 triplets at 48 px); copy it before changing it."""
    return make_synthetic_nights(
        tmp_path_factory.mktemp("sample") / "home", n_triplets=120, image_size=48, seed=7
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
