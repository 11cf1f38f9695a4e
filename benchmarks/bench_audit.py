"""Audit speed: our scoring vs. an upstream-style evaluation loop, same model, same run.

    python benchmarks/bench_audit.py [--triplets 48] [--variant dino_vitb16] [--workers 2]
        [--precisions bf16,int8,onnx-int8]

On a synthetic sample at 768 px, CPU, with DreamSim at the released sizes (random weights in
the release layout, LoRA merged), batch 16:

* upstream-style: a TwoAFC dataset read from the folder (pandas CSV, PIL open, bicubic resize,
  ToTensor per item), then ``model(ref, left)`` and ``model(ref, right)`` per batch, fp32:
  four image embeddings per triplet;
* ours: :func:`nights.audit.run_audit` (the whole audit but the HTML report) on the
  pre-resized table: each distinct image embedded once (three per triplet), DataLoader workers
  decoding while the model runs; at fp32 and at each of ``--precisions`` (``bf16``, ``fp16``,
  ``int8``: :func:`dreamsim.with_precision`; ``onnx``, ``onnx-int8``: ONNX Runtime).

All run ``--repeats`` times, interleaved, after a warm-up forward; the best of each is
reported, as a ratio against the upstream-style loop. Then each precision's fidelity against
fp32 on the embedded sample's 240 triplets (:mod:`nights.audit.fidelity`: decisions flipped,
max |distance difference|, change of the 2AFC score; random weights, so a precision's
perturbation of a ViT-B of this shape), the fp32 audit again with the embedding cache warm, and
the peak resident memory.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from upstream_style import TwoAFCDataset

from dreamsim import dreamsim, onnxruntime_model, with_precision
from nights import load_nights, make_synthetic_nights
from nights.audit import run_audit
from nights.audit.fidelity import SAMPLE, fidelity_on_sets
from nights.metrics import DreamSimMetric
from nights.score_cache import ScoreCache
from tests.dreamsim_checkpoints import write_release


def upstream_loop(model, root: Path, batch_size: int, workers: int) -> int:
    loader = torch.utils.data.DataLoader(
        TwoAFCDataset(root), batch_size=batch_size, num_workers=workers
    )
    count = 0
    with torch.inference_mode():
        for ref, left, right, _, _ in loader:
            model(ref, left)
            model(ref, right)
            count += len(ref)
    return count


def peak_rss_mb() -> float:
    """Peak resident memory of this process (VmHWM: resettable, unlike ru_maxrss)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1e3
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--triplets", type=int, default=48)
    parser.add_argument("--variant", default="dino_vitb16")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="interleaved runs of each")
    parser.add_argument(
        "--precisions",
        default="bf16,int8,onnx-int8",
        help="besides fp32 (comma-separated): bf16, fp16, int8, onnx, onnx-int8",
    )
    parser.add_argument("--memory-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_only:
        memory_growth(args.workers)
        return
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        os.environ["NIGHTS_HOME"] = str(scratch / "home")
        sample = make_synthetic_nights(
            scratch / "sample", n_triplets=args.triplets, image_size=768, n_unfiltered=0
        )
        write_release(scratch / "weights", args.variant, width=768, depth=12, proj=512)
        model, _ = dreamsim(cache_dir=scratch / "weights", dreamsim_type=args.variant, device="cpu")
        name = f"dreamsim:{args.variant}"
        metrics = {"fp32": DreamSimMetric(name, model)}
        for label in filter(None, args.precisions.split(",")):
            if label.startswith("onnx"):
                precision = label.removeprefix("onnx").lstrip("-") or "fp32"
                fast = onnxruntime_model(model, precision, scratch / "onnx")
            else:
                fast = with_precision(model, label)
            metrics[label] = DreamSimMetric(name, fast)

        for metric in metrics.values():  # warm-up: first-call allocations are no one's cost
            metric.embed(torch.rand(args.batch_size, 3, 224, 224))
        started = time.perf_counter()
        load_nights("all", root=sample, min_votes=None, image_size=224, progress=False)
        build_s = time.perf_counter() - started

        def audit(metric, cache: Path) -> float:
            started = time.perf_counter()
            run_audit(
                [metric],
                root=sample,
                split="all",
                min_votes=None,
                out=scratch / "audit",
                cache=cache,
                batch_size=args.batch_size,
                num_workers=args.workers,
                report=False,
                progress=False,
            )
            return time.perf_counter() - started

        upstream_times, times = [], {label: [] for label in metrics}
        for attempt in range(args.repeats):  # interleaved; the best of each is reported
            started = time.perf_counter()
            count = upstream_loop(model, sample / "nights", args.batch_size, args.workers)
            upstream_times.append(time.perf_counter() - started)
            for label, metric in metrics.items():
                cache = scratch / f"scores-{label}-{attempt}.sqlite"
                times[label].append(audit(metric, cache))
        warm_s = audit(metrics["fp32"], scratch / f"scores-fp32-{attempt}.sqlite")
        upstream_s, ours_s = min(upstream_times), min(times["fp32"])

        print(
            f"{count} triplets at 768 px, DreamSim {args.variant} (ViT-B), CPU "
            f"{torch.get_num_threads()} threads, batch {args.batch_size}, {args.workers} workers"
        )
        print(
            f"  upstream-style loop, fp32 : {count / upstream_s:7.2f} triplets/s "
            f"({upstream_s:.1f} s)"
        )
        for label in metrics:
            best = min(times[label])
            print(
                f"  our audit, {label:<15}: {count / best:7.2f} triplets/s ({best:.1f} s) "
                f"{upstream_s / best:6.2f}x"
            )
        print(f"  (one-time 224 px table build {build_s:.1f} s)")
        print(
            f"  warm-cache rerun    : {warm_s:.2f} s = {ours_s / warm_s:.0f}x faster than the first"
        )
        print(f"  peak resident memory: {peak_rss_mb():.0f} MB")
        print(f"  fidelity against fp32 on the {SAMPLE}:")
        for label, metric in metrics.items():
            if label == "fp32":
                continue
            measured = DreamSimMetric(name, metric.model, reference=metrics["fp32"])
            report = fidelity_on_sets(
                measured,
                [],
                cache=ScoreCache(scratch / "fidelity.sqlite"),
                batch_size=args.batch_size,
                num_workers=args.workers,
                progress=False,
            )[SAMPLE]
            print(
                f"    {label:<10}: {report['flipped']} of {report['triplets']} decisions flipped "
                f"({report['flipped_share']:.2%}), max |d - d_fp32| "
                f"{report['max_abs_distance_difference']:.4f}, 2AFC change "
                f"{report['two_afc_change']:+.4f}"
            )
    # In a fresh process, so that the peak above does not hide the growth.
    subprocess.run(
        [sys.executable, __file__, "--memory-only", "--workers", str(args.workers)], check=True
    )


COUNTS = (4000, 16000)  # both at least one chunk of rows (nights.audit.scoring.CHUNK_ROWS)


def memory_growth(workers: int) -> None:
    """Peak memory while auditing N and then 4N triplets: it must not grow with N."""
    # A child started by fork + exec inherits its parent's peak RSS; start the count afresh.
    Path("/proc/self/clear_refs").write_text("5")
    peaks = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        for count in COUNTS:
            # Sample and table are made by other processes: only the audit is measured here.
            sample = scratch / str(count)
            cli = [sys.executable, "-m", "nights.cli"]
            subprocess.run(
                [
                    *cli,
                    "sample",
                    str(sample),
                    "--triplets",
                    str(count),
                    "--image-size",
                    "32",
                    "--unfiltered",
                    "0",
                ],
                check=True,
                capture_output=True,
            )
            subprocess.run(
                [*cli, "build", "--root", str(sample), "--quiet"], check=True, capture_output=True
            )
            run_audit(
                ["psnr"],
                root=sample,
                split="all",
                min_votes=None,
                out=scratch / f"audit-{count}",
                cache=scratch / f"{count}.db",
                batch_size=64,
                num_workers=workers,
                report=False,
                progress=False,
            )
            peaks.append(peak_rss_mb())
    extra = (peaks[1] - peaks[0]) * 1e6 / (COUNTS[1] - COUNTS[0])
    print(
        f"  peak memory auditing {COUNTS[0]:,} then {COUNTS[1]:,} triplets (32 px, PSNR): "
        f"{peaks[0]:.0f} MB -> {peaks[1]:.0f} MB ({extra:.0f} bytes per extra triplet)"
    )


if __name__ == "__main__":
    main()
