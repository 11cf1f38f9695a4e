"""Fixtures for the test suite and for the docstring examples of ``nights`` (run by pytest with
``--doctest-modules``): private homes, loopback-only sockets, a small synthetic sample.

Docstring examples find in their namespace ``sample_root`` (a synthetic NIGHTS home: 120 triplets
at 48 px, in the release layout), ``scratch`` (an empty folder of their own) and ``mirror_url`` (a
local server holding the sample's release archives, as upstream's host does).
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from nights.synthetic import make_synthetic_nights


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


@pytest.fixture(scope="session")
def mirror_url(sample_home, tmp_path_factory):
    """A local release server holding the sample's archives; its base URL."""
    from tests.servers import ReleaseServer, make_release_archives

    mirror = make_release_archives(sample_home, tmp_path_factory.mktemp("mirror"))
    with ReleaseServer(mirror) as server:
        yield server.url


@pytest.fixture(autouse=True)
def _docstring_namespace(request, doctest_namespace, tmp_path):
    """What docstring examples may use; the mirror only for the modules that download."""
    if not isinstance(request.node, pytest.DoctestItem):
        return
    doctest_namespace["sample_root"] = request.getfixturevalue("sample_home")
    doctest_namespace["scratch"] = tmp_path
    if request.node.name.startswith(("nights.download", "nights.remote_zip")):
        doctest_namespace["mirror_url"] = request.getfixturevalue("mirror_url")
