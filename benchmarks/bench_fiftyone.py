"""FiftyOne dataset of 2,000 triplets: build time and peak memory; update in place vs. rebuild.

    python benchmarks/bench_fiftyone.py [--triplets 2000]

Starts its own mongod (the one FiftyOne's set-up installed) on 127.0.0.1 with a temporary
dbpath, builds the grouped dataset (6,000 samples) with an audit, then applies a second audit
to the existing dataset (update in place) and, for comparison, rebuilds it from scratch with
that audit, in the same run.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.servers import mongo_server


def fake_audit(table, seed: int) -> pd.DataFrame:
    """An audit-shaped frame with random distances (the cost is in FiftyOne, not in them)."""
    rng = np.random.default_rng(seed)
    frame = table.select_columns(["id", "left_vote", "right_vote", "votes"]).to_pandas()
    frame["metric"] = "psnr"
    frame["d_left"], frame["d_right"] = rng.random(len(frame)), rng.random(len(frame))
    frame["margin"] = frame["d_left"] - frame["d_right"]
    frame["model_choice"] = np.where(frame["margin"] > 0, "right", "left")
    frame["human_choice"] = np.where(frame["right_vote"] > 0.5, "right", "left")
    frame["agree"] = frame["model_choice"] == frame["human_choice"]
    frame["confidence"] = 0.5 + frame["margin"].abs() / 2
    frame["label_noise_candidate"] = ~frame["agree"] & (frame["margin"].abs() > 0.8)
    return frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--triplets", type=int, default=2000)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-fo-"))
    with mongo_server() as uri:
        os.environ.update(
            FIFTYONE_DATABASE_URI=uri,
            FIFTYONE_DO_NOT_TRACK="true",
            HOME=str(scratch / "home"),
            NIGHTS_HOME=str(scratch / "nights"),
        )
        from nights import load_nights, make_synthetic_nights
        from nights.visualize import to_fiftyone

        sample = make_synthetic_nights(
            scratch / "sample", n_triplets=args.triplets, image_size=32, n_unfiltered=0
        )
        table = load_nights("all", root=sample, min_votes=None, progress=False)
        first, second = fake_audit(table, 1), fake_audit(table, 2)
        to_fiftyone(table, name="warm-up", audit=first, overwrite=True)  # imports, indexes
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3

        started = time.perf_counter()
        to_fiftyone(table, name="bench", audit=first, overwrite=True)
        build_s = time.perf_counter() - started
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3

        started = time.perf_counter()
        to_fiftyone(table, name="bench", audit=second)
        update_s = time.perf_counter() - started

        started = time.perf_counter()
        to_fiftyone(table, name="bench", audit=second, overwrite=True)
        rebuild_s = time.perf_counter() - started
    shutil.rmtree(scratch, ignore_errors=True)
    print(
        f"{args.triplets} triplets ({3 * args.triplets} samples), one audit metric, "
        f"{sys.platform}, mongod on loopback"
    )
    print(
        f"  build with audit     : {build_s:6.2f} s, peak RSS {peak:.0f} MB "
        f"({before:.0f} MB before)"
    )
    print(f"  update in place      : {update_s:6.2f} s")
    print(f"  rebuild              : {rebuild_s:6.2f} s")
    print(f"  update vs. rebuild   : {rebuild_s / update_s:6.1f}x faster")


if __name__ == "__main__":
    main()
