"""The file plumbing: atomic writes and the inter-process lock."""

from __future__ import annotations

import multiprocessing
import time

import pytest

from nights._files import atomic_path, file_lock, write_atomic


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "summary.json"
    write_atomic(target, '{"old": true}')
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        temporary.write_text('{"new": ')
        raise RuntimeError("killed half-way")
    assert target.read_text() == '{"old": true}'
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]
    write_atomic(target, b"\x00new")
    assert target.read_bytes() == b"\x00new"


def _hold(path, entered, release) -> None:
    with file_lock(path):
        entered.set()
        release.wait(30)


def test_the_lock_keeps_a_second_process_out_until_the_first_is_done(tmp_path):
    context = multiprocessing.get_context("spawn")
    entered, release = context.Event(), context.Event()
    holder = context.Process(target=_hold, args=(tmp_path / "x.lock", entered, release))
    holder.start()
    try:
        assert entered.wait(60)
        from filelock import Timeout

        with pytest.raises(Timeout), file_lock(tmp_path / "x.lock", wait=False):
            pass
        release.set()
        started = time.monotonic()
        with file_lock(tmp_path / "x.lock"):  # waits for the holder, then gets it
            assert time.monotonic() - started < 30
    finally:
        release.set()
        holder.join(30)
    assert holder.exitcode == 0
