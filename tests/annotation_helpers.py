"""Helpers of the annotation tests (and bench_annotation): the app in a process of its own,
participants played against the store or over HTTP, a clock moved by hand."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

from annotation.campaign import CampaignStore

from .servers import free_port, wait_for_port


@contextlib.contextmanager
def running_server(campaign: Path, workers: int = 1):
    """``nights annotate serve`` in a process of its own; yields its base URL."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "nights.cli",
        "annotate",
        "serve",
        str(campaign),
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port, process, "the annotation server")
    try:
        yield f"http://127.0.0.1:{port}", process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(10)


def wait_for_children(pid: int, count: int, timeout: float = 60) -> None:
    """Waits until the server process has ``count`` worker processes of its own."""
    import time

    import psutil

    deadline = time.monotonic() + timeout
    while len(psutil.Process(pid).children()) < count:
        assert time.monotonic() < deadline, f"the server did not start {count} workers"
        time.sleep(0.2)


class Clock:
    """A clock the test moves by hand (``CampaignStore(path, clock=...)``)."""

    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def assigned(store: CampaignStore, worker: str) -> list[tuple]:
    """The participant's trials in order: (trial id, kind, swapped, expected) from the store."""
    return store.db.execute(
        """SELECT t.id, t.kind, t.swapped, t.expected FROM assignments a
        JOIN trials t ON t.id = a.trial WHERE a.worker = ? ORDER BY a.position""",
        (worker,),
    ).fetchall()


def careful_answer(trial: int, kind: str, swapped: int, expected: str | None) -> str:
    """A careful participant: sentinels right, and always the stored left image, so repeats
    (sides reversed) get the same answer."""
    return expected if expected else ("right" if swapped else "left")


def answer_in_store(store: CampaignStore, worker: str, choose, clock=None, step_s=0.0) -> dict:
    """Plays a participant against the store: ``choose(trial id, kind, swapped, expected)`` gives
    the displayed answer; ``clock`` moves ``step_s`` before each answer. Returns the last state."""
    state = store.start(worker)
    trials = assigned(store, worker)
    while state["status"] == "active":
        if clock is not None:
            clock.now += step_s
        state = store.answer(
            worker, state["trial"]["trial"], choose(*trials[state["answered"]]), 600
        )
    return state


def answer_over_http(client, worker: str, choose=None, limit=None, rt_ms=800) -> dict:
    """Plays a participant over HTTP as the page does: opens the session, loads every image of
    the current trial, answers it (``choose(trial)``: default left, or same for JND). Stops
    after ``limit`` answers; returns the last state."""
    state = client.get("/api/session", params={"PROLIFIC_PID": worker}).json()
    answered = 0
    while state["status"] == "active" and (limit is None or answered < limit):
        trial = state["trial"]
        for url in (trial["ref"], trial["left"], trial["right"]):
            if url:
                client.get(url).raise_for_status()
        answer = choose(trial) if choose else ("same" if trial["kind"] == "jnd" else "left")
        reply = client.post(
            "/api/answer",
            json={"worker": worker, "trial": trial["trial"], "answer": answer, "rt_ms": rt_ms},
        )
        reply.raise_for_status()
        state = reply.json()
        answered += 1
    return state
