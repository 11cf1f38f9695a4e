"""How fast the triplet table feeds a model, against an upstream-style loader, same run.

    python benchmarks/bench_load.py [--triplets 300] [--rows 20000] [--workers 2]

1. On a synthetic sample at 768 px: triplets/s of 224x224 tensors through our pre-resized
   table, as PNG and as raw pixels (``images="pixels"``), vs. an upstream-style loader (pandas
   CSV + PIL open + resize per item from the folder), all with the same DataLoader settings;
   and the build of the 224 px raw table per image, one process against every core.
2. On a 20k-row synthetic table at a small image size: the cold build and the warm
   ``load_nights`` time.
3. Resident memory while iterating the 20k rows: sampled along the way; it must stay flat.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import pandas as pd
import psutil
import torch
from PIL import Image

from dreamsim import preprocess
from nights import load_nights, make_synthetic_nights
from nights.torch_data import to_torch


class UpstreamStyleDataset(torch.utils.data.Dataset):
    """What upstream's TwoAFCDataset does: read the CSV with pandas, open and resize per item."""

    def __init__(self, root: Path):
        frame = pd.read_csv(root / "data.csv")
        self.frame = frame[frame["votes"] >= 6].reset_index(drop=True)
        self.root = root

    def __len__(self):
        return len(self.frame)

    def _load(self, relative):
        # dreamsim.preprocess is upstream's Resize((224, 224), BICUBIC) + ToTensor
        return preprocess(Image.open(self.root / relative))[0]

    def __getitem__(self, index):
        row = self.frame.iloc[index]
        return (
            self._load(row["ref_path"]),
            self._load(row["left_path"]),
            self._load(row["right_path"]),
            float(row["right_vote"]),
            int(row["id"]),
        )


def triplets_per_second(loader, epochs: int = 3) -> tuple[float, int]:
    """Steady state: a warm-up epoch starts the persistent workers; the median of ``epochs``."""
    for _ in loader:
        pass
    rates = []
    for _ in range(epochs):
        started = time.perf_counter()
        count = sum(len(batch[0]) for batch in loader)
        rates.append(count / (time.perf_counter() - started))
    return sorted(rates)[len(rates) // 2], count


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--triplets", type=int, default=300, help="768 px sample size")
    parser.add_argument("--rows", type=int, default=20_000, help="rows of the large table")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        os.environ["NIGHTS_HOME"] = str(scratch / "home")
        print(f"writing a {args.triplets}-triplet sample at 768 px ...", flush=True)
        sample = make_synthetic_nights(
            scratch / "s768", n_triplets=args.triplets, image_size=768, n_unfiltered=0
        )
        build_s = {}
        for jobs in (1, os.cpu_count()):
            started = time.perf_counter()
            raw = load_nights(
                "all",
                root=sample,
                images="pixels",
                image_size=224,
                cache_dir=scratch / f"tables-{jobs}",
                jobs=jobs,
                progress=False,
            )
            build_s[jobs] = time.perf_counter() - started
        png = load_nights("all", root=sample, image_size=224, progress=False)
        images = 3 * len(load_nights("all", root=sample, min_votes=None, progress=False))
        settings = {
            "batch_size": args.batch_size,
            "num_workers": args.workers,
            "persistent_workers": args.workers > 0,
        }
        upstream_loader = torch.utils.data.DataLoader(
            UpstreamStyleDataset(sample / "nights"), **settings
        )
        upstream, n = triplets_per_second(upstream_loader)
        from_png, n_png = triplets_per_second(to_torch(png, **settings))
        from_raw, n_raw = triplets_per_second(to_torch(raw, **settings))
        assert n == n_png == n_raw, (n, n_png, n_raw)
        print(
            f"\n[1] {n} triplets (votes >= 6) at 768 px -> 224 px tensors, "
            f"batch {args.batch_size}, {args.workers} workers"
        )
        print(f"    upstream-style loader     : {upstream:8.1f} triplets/s")
        for label, rate in (("PNG   ", from_png), ("pixels", from_raw)):
            print(
                f"    pre-resized table, {label} : {rate:8.1f} triplets/s {rate / upstream:6.1f}x"
            )
        every = os.cpu_count()
        print(
            f"    build of the 224 px pixel table ({images} images): "
            f"{build_s[1] / images * 1000:.1f} ms/image on 1 process, "
            f"{build_s[every] / images * 1000:.1f} ms/image on {every} "
            f"({build_s[1] / build_s[every]:.2f}x)"
        )

        print(f"\nwriting a {args.rows}-row sample at 16 px ...", flush=True)
        large = make_synthetic_nights(
            scratch / "large", n_triplets=args.rows, image_size=16, n_unfiltered=0
        )
        started = time.perf_counter()
        load_nights("all", root=large, min_votes=None, progress=False)
        cold_s = time.perf_counter() - started
        warm = []
        for _ in range(5):
            started = time.perf_counter()
            table = load_nights("all", root=large, min_votes=None, progress=False)
            warm.append(time.perf_counter() - started)
        print(
            f"\n[2] {len(table)} rows: cold build {cold_s:.2f} s, warm load_nights "
            f"median {sorted(warm)[2] * 1000:.1f} ms (best {min(warm) * 1000:.1f} ms)"
        )

        loader = to_torch(table, batch_size=64, image_size=16)
        samples = []
        for number, _ in enumerate(loader):
            if number % 30 == 0:
                samples.append(rss_mb())
        samples.append(rss_mb())
        tenth = samples[max(1, len(samples) // 10)]
        print(
            f"\n[3] resident memory iterating {len(table)} rows: "
            f"{tenth:.0f} MB after 10%, {samples[-1]:.0f} MB at the end, "
            f"peak {max(samples):.0f} MB (growth after 10%: {samples[-1] - tenth:+.0f} MB)"
        )


if __name__ == "__main__":
    main()
