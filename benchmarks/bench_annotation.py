"""Votes per second the collection app accepts from concurrent clients, and the p99 latency.

    python benchmarks/bench_annotation.py [--clients 20] [--trials 50]

A campaign over a synthetic sample, the app under uvicorn in its own process on 127.0.0.1,
``--clients`` threads each starting a session and answering all its trials as fast as the
server acknowledges them (every vote is committed with a synchronous SQLite write before the
reply).
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
from tests.test_annotation_server import running_server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1, help="server processes")
    parser.add_argument("--trials", type=int, default=50, help="trials per participant")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        sample = make_synthetic_nights(scratch / "s", n_triplets=400, image_size=16, n_unfiltered=0)
        table = load_nights(
            "all", root=sample, min_votes=None, cache_dir=scratch / "t", progress=False
        )
        campaign = scratch / "c.sqlite"
        create_campaign(campaign, table, trials_per_participant=args.trials, votes_per_trial=5)
        latencies: list[float] = []
        lock = threading.Lock()

        def participant(number: int, url: str) -> None:
            with httpx.Client(base_url=url, timeout=60) as client:
                state = client.get("/api/session", params={"worker": f"b{number}"}).json()
                for trial in state["trials"]:
                    started = time.perf_counter()
                    client.post(
                        "/api/answer",
                        json={
                            "worker": f"b{number}",
                            "trial": trial["trial"],
                            "answer": "left",
                            "rt_ms": 500,
                        },
                    ).raise_for_status()
                    with lock:
                        latencies.append(time.perf_counter() - started)

        with running_server(campaign, args.workers) as (url, _):
            threads = [
                threading.Thread(target=participant, args=(n, url)) for n in range(args.clients)
            ]
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            elapsed = time.perf_counter() - started
    latencies_ms = np.array(latencies) * 1000
    print(
        f"{args.clients} concurrent clients, {args.workers} server process(es), "
        f"{len(latencies)} votes in {elapsed:.1f} s: "
        f"{len(latencies) / elapsed:.0f} votes/s; latency p50 "
        f"{np.percentile(latencies_ms, 50):.1f} ms, p99 {np.percentile(latencies_ms, 99):.1f} ms"
    )


if __name__ == "__main__":
    main()
