"""Our download engine against upstream's way (one connection, one file after another).

    python benchmarks/bench_download.py [--triplets 600] [--image-size 96] [--rate 2e6]

A local server limits every connection to ``--rate`` bytes/s, as a distant host does. Both
fetch and unzip the chunked release made from a synthetic sample (release-like split sizes):

1. the sequential baseline: for each chunk, one GET streamed to disk, then unzip
   (what upstream's shell script does with wget and unzip);
2. ``nights.download.download("chunked")``: parallel connections, verification, manifest.

Then ``--split test`` fetched out of nights.zip: bytes transferred vs. the whole archive.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nights import make_synthetic_nights
from nights.download import download
from nights.releases import RELEASES
from nights.transfer import HttpClient
from tests.servers import ReleaseServer, make_release_archives


def sequential_baseline(base_url: str, root: Path) -> int:
    """One connection, one file at a time, then unzip: upstream's download script."""
    received = 0
    root.mkdir(parents=True, exist_ok=True)
    with requests.Session() as session:
        for release_file in RELEASES["chunked"].files:
            archive = root / Path(release_file.path).name
            with session.get(base_url + release_file.path, stream=True) as response:
                response.raise_for_status()
                with open(archive, "wb") as out:
                    for block in response.iter_content(1 << 16):
                        out.write(block)
                        received += len(block)
            with zipfile.ZipFile(archive) as opened:
                opened.extractall(root / release_file.target)
            archive.unlink()
    return received


def _serve(mirror: Path, rate: float, port_queue, stop_event) -> None:
    with ReleaseServer(mirror, rate_limit=rate) as server:
        port_queue.put(server.url)
        stop_event.wait()


@contextlib.contextmanager
def server_process(mirror: Path, rate: float):
    """The server in a process of its own, so that it does not share the client's GIL."""
    context = multiprocessing.get_context("spawn")
    port_queue, stop_event = context.Queue(), context.Event()
    process = context.Process(target=_serve, args=(mirror, rate, port_queue, stop_event))
    process.start()
    try:
        yield port_queue.get(timeout=60)
    finally:
        stop_event.set()
        process.join(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--triplets", type=int, default=600)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--rate", type=float, default=2e6, help="bytes/s per connection")
    parser.add_argument("--jobs", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        print(
            f"writing {args.triplets} triplets at {args.image_size} px and their archives ...",
            flush=True,
        )
        sample = make_synthetic_nights(
            scratch / "sample",
            n_triplets=args.triplets,
            image_size=args.image_size,
            n_unfiltered=0,
            split_fractions=(0.79, 0.10, 0.11),
        )
        mirror = make_release_archives(sample, scratch / "mirror")
        chunk_bytes = sum((mirror / f.path).stat().st_size for f in RELEASES["chunked"].files)
        archive_bytes = (mirror / "nights.zip").stat().st_size
        with server_process(mirror, args.rate) as url:
            started = time.perf_counter()
            sequential_baseline(url, scratch / "baseline")
            baseline_s = time.perf_counter() - started

            started = time.perf_counter()
            download("chunked", scratch / "ours", base_url=url, jobs=args.jobs, progress=False)
            ours_s = time.perf_counter() - started

            client = HttpClient(connections=args.jobs)
            download(
                "full",
                scratch / "subset",
                split="test",
                base_url=url,
                jobs=args.jobs,
                progress=False,
                client=client,
            )
            subset_bytes = client.bytes_received

        print(
            f"\n[1] chunked release, {chunk_bytes / 1e6:.1f} MB in 200 zips, "
            f"{args.rate / 1e6:.1f} MB/s per connection"
        )
        print(f"    sequential, one connection : {baseline_s:6.1f} s")
        print(f"    nights download ({args.jobs} jobs) : {ours_s:6.1f} s")
        print(f"    speed-up                   : {baseline_s / ours_s:6.1f}x")
        print(f"\n[2] --split test out of nights.zip ({archive_bytes / 1e6:.1f} MB)")
        print(
            f"    bytes transferred          : {subset_bytes / 1e6:6.2f} MB "
            f"= {100 * subset_bytes / archive_bytes:.1f}% of the archive"
        )


if __name__ == "__main__":
    main()
