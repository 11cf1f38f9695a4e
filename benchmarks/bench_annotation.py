"""Votes per second the collection app accepts from concurrent clients, and the p99 latency.

    python benchmarks/bench_annotation.py [--clients 20] [--trials 50] [--workers 1]

A campaign over a synthetic sample, the app under uvicorn in its own process on 127.0.0.1,
``--clients`` threads each starting a session and going through all its trials as fast as the
server allows, each trial's answer bringing the next trial back. Every vote is committed with a
synchronous SQLite write before the reply. Two runs on fresh campaigns: answers alone (the
baseline), then as the page does it, every trial's images fetched before its answer; the
ratio says what serving the images costs. Latencies are the answers' alone.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from annotation.campaign import create_campaign
from nights import load_nights, make_synthetic_nights
from tests.annotation_helpers import running_server


def run(campaign: Path, clients: int, workers: int, images: bool) -> tuple[int, float, list]:
    """Votes stored, seconds taken and answer latencies of ``clients`` concurrent participants."""
    latencies: list[float] = []
    lock = threading.Lock()

    def participant(number: int, url: str) -> None:
        worker = f"b{number}"
        with httpx.Client(base_url=url, timeout=60) as client:
            state = client.get("/api/session", params={"worker": worker}).json()
            while state["status"] == "active":
                trial = state["trial"]
                if images:
                    for image in (trial["ref"], trial["left"], trial["right"]):
                        client.get(image).raise_for_status()
                started = time.perf_counter()
                answer = {"worker": worker, "trial": trial["trial"], "answer": "left"}
                reply = client.post("/api/answer", json={**answer, "rt_ms": 500})
                reply.raise_for_status()
                state = reply.json()
                with lock:
                    latencies.append(time.perf_counter() - started)

    with running_server(campaign, workers) as (url, _):
        threads = [threading.Thread(target=participant, args=(n, url)) for n in range(clients)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
    return len(latencies), elapsed, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1, help="server processes")
    parser.add_argument("--trials", type=int, default=50, help="trials per participant")
    args = parser.parse_args()
    rates = {}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        sample = make_synthetic_nights(scratch / "s", n_triplets=400, image_size=16, n_unfiltered=0)
        table = load_nights(
            "all", root=sample, min_votes=None, cache_dir=scratch / "t", progress=False
        )
        for images in (False, True):
            campaign = scratch / f"c-{images}.sqlite"
            create_campaign(campaign, table, trials_per_participant=args.trials, votes_per_trial=5)
            votes, elapsed, latencies = run(campaign, args.clients, args.workers, images)
            rates[images] = votes / elapsed
            latencies_ms = np.array(latencies) * 1000
            print(
                f"{'with 3 images each' if images else 'answers alone     '}: {votes} votes "
                f"in {elapsed:.1f} s, {rates[images]:.0f} votes/s; answer latency p50 "
                f"{np.percentile(latencies_ms, 50):.1f} ms, p99 "
                f"{np.percentile(latencies_ms, 99):.1f} ms"
            )
    print(
        f"{args.clients} concurrent clients, {args.workers} server process(es): fetching the "
        f"images leaves {rates[True] / rates[False]:.2f}x the votes/s of answers alone"
    )


if __name__ == "__main__":
    main()
