"""Writing NIGHTS as a Hub folder: time and peak memory against plain Parquet shards.

    python benchmarks/bench_publish.py [--triplets 20019] [--image-size 32] [--repeats 2]

A synthetic release (as many triplets as the 20k release, small images, no unfiltered set) is
written and its table built by other processes first. Then, each in a fresh process, the runs
interleaved and the best of each reported:

* baseline: ``write_split(table, out, format="parquet")``, the same rows and image bytes as
  Parquet shards of 100 rows, with ``provenance.json``;
* ours: ``write_hub_folder(out, root, variants=["nights"])``: shards with row groups, sha256 of
  every shard, the card, the checks of ``validate_hub_folder`` (without checksums) and the
  rename into place;

then ``validate_hub_folder`` with checksums (what ``--push`` runs before uploading) and the
first ``load_nights(root=folder)`` (the rows written out as a release folder, then the table).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1e3
    raise RuntimeError("no VmHWM in /proc/self/status")


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def child(job: str, sample: Path, out: Path) -> None:
    """One measured job in this (fresh) process; prints seconds, peak memory and size."""
    Path("/proc/self/clear_refs").write_text("5")  # the peak of this job, not of the parent's
    from nights import load_nights
    from nights.publish import validate_hub_folder, write_hub_folder
    from nights.splits import write_split

    started = time.perf_counter()
    if job == "baseline":
        table = load_nights("all", root=sample, min_votes=None, progress=False)
        write_split(table, out, format="parquet")
    elif job == "publish":
        write_hub_folder(out, root=sample, variants=["nights"], progress=False)
    elif job == "validate":
        validate_hub_folder(out)
    elif job == "load":
        load_nights("all", root=out, min_votes=None, progress=False)
    seconds = time.perf_counter() - started
    size = folder_mb(out) if job in ("baseline", "publish") else 0.0
    print(json.dumps({"seconds": seconds, "peak_mb": peak_rss_mb(), "mb": size}))


def run(job: str, sample: Path, out: Path) -> dict:
    result = subprocess.run(
        [sys.executable, __file__, "--child", job, str(sample), str(out)],
        check=True,
        capture_output=True,
        text=True,
        env=os.environ,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--triplets", type=int, default=20019)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2, help="interleaved runs of each")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), Path(args.child[2]))
        return
    import shutil

    with tempfile.TemporaryDirectory(prefix="bench-publish-") as scratch:
        scratch = Path(scratch)
        os.environ["NIGHTS_HOME"] = str(scratch / "home")
        os.environ["HF_DATASETS_CACHE"] = str(scratch / "hf")
        sample = scratch / "sample"
        cli = [sys.executable, "-m", "nights.cli"]
        started = time.perf_counter()
        sizes = ["--triplets", str(args.triplets), "--image-size", str(args.image_size)]
        subprocess.run(
            [*cli, "sample", str(sample), *sizes, "--unfiltered", "0"],
            check=True,
            capture_output=True,
        )
        subprocess.run([*cli, "build", "--root", str(sample), "--quiet"], check=True)
        print(
            f"{args.triplets:,} triplets at {args.image_size} px "
            f"(sample + table: {time.perf_counter() - started:.0f} s, not counted)"
        )
        results: dict[str, list[dict]] = {"baseline": [], "publish": []}
        for attempt in range(args.repeats):
            for job in results:
                out = scratch / f"{job}-{attempt}"
                results[job].append(run(job, sample, out))
                if attempt < args.repeats - 1:
                    shutil.rmtree(out)
        best = {job: min(runs, key=lambda r: r["seconds"]) for job, runs in results.items()}
        last = scratch / f"publish-{args.repeats - 1}"
        validate = run("validate", sample, last)
        load = run("load", sample, last)

    base, ours = best["baseline"], best["publish"]
    print(
        f"  write_split parquet (baseline): {base['seconds']:6.1f} s, "
        f"peak {base['peak_mb']:5.0f} MB, {base['mb']:.0f} MB written"
    )
    print(
        f"  write_hub_folder              : {ours['seconds']:6.1f} s, "
        f"peak {ours['peak_mb']:5.0f} MB, {ours['mb']:.0f} MB written"
    )
    print(
        f"  ratio ours/baseline           : time {ours['seconds'] / base['seconds']:.2f}x, "
        f"peak memory {ours['peak_mb'] / base['peak_mb']:.2f}x"
    )
    print(
        f"  validate_hub_folder (sha256)  : {validate['seconds']:6.1f} s, "
        f"peak {validate['peak_mb']:5.0f} MB"
    )
    print(
        f"  first load_nights(root=folder): {load['seconds']:6.1f} s, "
        f"peak {load['peak_mb']:5.0f} MB"
    )


if __name__ == "__main__":
    main()
