"""Training speed: ``nights.train.train`` vs. an upstream-style training loop, same model, same run.

    python benchmarks/bench_train.py [--triplets 32] [--variant dino_vitb16] [--depth 12]
    python benchmarks/bench_train.py --device cuda --variant ensemble     # on a GPU

On a synthetic sample at 768 px, DreamSim with LoRA (r=16, alpha=8, dropout 0.3 on qkv: PEFT
layers) on random backbones of the released sizes, batch 16, one epoch, Adam, the hinge loss:

* upstream-style: a TwoAFC dataset read from the folder (pandas CSV, PIL open, bicubic resize,
  ToTensor per item), then ``model(ref, left)`` and ``model(ref, right)`` per batch, fp32: the
  reference is embedded twice, four embeddings per triplet, PEFT's own dropout;
* ours: :func:`nights.train.train` on the pre-resized 224 px table (the one-time build is
  reported apart), three embeddings per triplet in one forward pass, per-triplet dropout masks,
  the step log written as it goes (its per-epoch checkpoint, validation and report are not
  timed: the epoch's own clock is read).

Both run ``--repeats`` times, interleaved, after a warm-up step; the best of each is reported.
Then the peak resident memory of each for several batch sizes, each in a fresh process. With
``--device cuda``: ours in fp32 and in bf16 autocast, triplets/s and peak GPU memory.
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

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from upstream_style import TwoAFCDataset

from dreamsim import trainable_parameters, training_model
from nights import load_nights, make_synthetic_nights
from nights.train import Rows, TrainConfig, train
from tests.dreamsim_checkpoints import write_release

MARGIN = 0.05


def upstream_model(weights: Path, variant: str, device: str):
    torch.manual_seed(1234)
    model = training_model(variant, cache_dir=weights, device=device)
    optimizer = torch.optim.Adam(trainable_parameters(model).values(), lr=3e-4, betas=(0.5, 0.999))
    return model, optimizer


def upstream_step(model, optimizer, ref, left, right, vote) -> None:
    d0, d1 = model(ref, left), model(ref, right)
    target = torch.round(vote) * 2 - 1
    loss = torch.clamp(MARGIN - (d0 - d1) * target, min=0).sum() / len(vote)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def upstream_loop(model, optimizer, root: Path, args, limit=None) -> tuple[int, float]:
    """One epoch as upstream's training loop runs it; (triplets, seconds)."""
    loader = torch.utils.data.DataLoader(
        TwoAFCDataset(root, limit), batch_size=args.batch_size, num_workers=args.workers
    )
    count, started = 0, time.perf_counter()
    for ref, left, right, vote, _ in loader:
        device = args.device
        upstream_step(model, optimizer, ref.to(device), left.to(device), right.to(device), vote)
        count += len(ref)
    if args.device == "cuda":
        torch.cuda.synchronize()
    return count, time.perf_counter() - started


def ours(sample: Path, weights: Path, out: Path, args, precision="no", limit=None):
    """One epoch of :func:`nights.train.train`; (triplets, seconds of the epoch's loop)."""
    config = TrainConfig(
        out=str(out),
        root=str(sample),
        train=Rows("all", min_votes=None, limit=limit),
        val=None,
        test=None,
        variant=args.variant,
        weights=str(weights),
        epochs=1,
        batch_size=args.batch_size,
        num_workers=args.workers,
        mixed_precision=precision,
        device="cpu" if args.device == "cpu" else None,
        save_every=10**9,
    )
    result = train(config, progress=False)
    epoch = result.epochs[-1]
    return int(pd.read_csv(result.paths["log"])["triplets"].sum()), epoch["seconds"]


def peak_rss_mb() -> float:
    """Peak resident memory of this process (VmHWM), as bench_audit reads it."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1e3
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def prepare(scratch: Path, args) -> tuple[Path, Path]:
    os.environ["NIGHTS_HOME"] = str(scratch / "home")
    sample = make_synthetic_nights(
        scratch / "sample", n_triplets=args.triplets, image_size=768, n_unfiltered=0
    )
    weights = scratch / "weights"
    write_release(weights, args.variant, width=768, depth=args.depth, proj=512, adapter=False)
    return sample, weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--triplets", type=int, default=32)
    parser.add_argument("--variant", default="dino_vitb16")
    parser.add_argument("--depth", type=int, default=12, help="ViT blocks (released: 12)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="interleaved runs of each")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--memory-batches", default="4,8,16", help="batch sizes of the memory table"
    )
    parser.add_argument("--memory-only", choices=("ours", "upstream"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_only:
        memory(args)
        return
    if args.device == "cuda":
        gpu(args)
        return
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        sample, weights = prepare(scratch, args)
        started = time.perf_counter()
        load_nights("all", root=sample, min_votes=None, image_size=224, progress=False)
        build_s = time.perf_counter() - started
        model, optimizer = upstream_model(weights, args.variant, "cpu")
        warm = torch.rand(3, 2, 3, 224, 224)  # first-call allocations are no one's cost
        upstream_step(model, optimizer, *warm, torch.tensor([0.0, 1.0]))
        upstream_times, ours_times = [], []
        for attempt in range(args.repeats):
            count, seconds = upstream_loop(model, optimizer, sample / "nights", args)
            upstream_times.append(seconds)
            ours_count, seconds = ours(sample, weights, scratch / f"run-{attempt}", args)
            ours_times.append(seconds)
        assert ours_count == count, (ours_count, count)
        upstream_s, ours_s = min(upstream_times), min(ours_times)

    print(
        f"{count} triplets at 768 px, DreamSim {args.variant} (ViT-B width 768, depth "
        f"{args.depth}) + LoRA r16 on qkv, fp32, CPU {torch.get_num_threads()} threads, batch "
        f"{args.batch_size}, {args.workers} workers, one epoch"
    )
    print(f"  upstream-style loop : {count / upstream_s:7.2f} triplets/s ({upstream_s:.1f} s)")
    print(
        f"  nights train        : {count / ours_s:7.2f} triplets/s ({ours_s:.1f} s; one-time "
        f"224 px table build {build_s:.1f} s)"
    )
    print(f"  speed-up            : {upstream_s / ours_s:7.2f}x")
    print("  peak resident memory (fresh process, 2 steps):")
    for batch in (int(b) for b in args.memory_batches.split(",")):
        peaks = {}
        for kind in ("upstream", "ours"):
            done = subprocess.run(
                [
                    *(sys.executable, __file__, "--memory-only", kind),
                    *("--batch-size", str(batch), "--variant", args.variant),
                    *("--depth", str(args.depth), "--workers", str(args.workers)),
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            peaks[kind] = float(done.stdout.split()[-1])
        print(
            f"    batch {batch:3d}: upstream-style {peaks['upstream']:6.0f} MB, "
            f"nights train {peaks['ours']:6.0f} MB"
        )


def memory(args) -> None:
    """Prints the peak resident memory of two training steps of one kind (a fresh process)."""
    Path("/proc/self/clear_refs").write_text("5")  # fork + exec inherits the parent's peak
    args.triplets = 2 * args.batch_size
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        sample, weights = prepare(scratch, args)
        if args.memory_only == "ours":
            load_nights("all", root=sample, min_votes=None, image_size=224, progress=False)
        Path("/proc/self/clear_refs").write_text("5")  # the sample's making is not training
        if args.memory_only == "ours":
            ours(sample, weights, scratch / "run", args)
        else:
            model, optimizer = upstream_model(weights, args.variant, "cpu")
            upstream_loop(model, optimizer, sample / "nights", args)
        print(f"{peak_rss_mb():.0f}")


def gpu(args) -> None:
    """Ours in fp32 and bf16 on the GPU: triplets/s and peak GPU memory."""
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        sample, weights = prepare(scratch, args)
        load_nights("all", root=sample, min_votes=None, image_size=224, progress=False)
        print(
            f"{args.triplets} triplets, DreamSim {args.variant} + LoRA r16, batch "
            f"{args.batch_size}, {torch.cuda.get_device_name()}"
        )
        measured = {}
        for attempt, precision in enumerate(("no", "bf16") * 2):  # the second of each counts
            torch.cuda.reset_peak_memory_stats()
            count, seconds = ours(sample, weights, scratch / f"run-{attempt}", args, precision)
            measured[precision] = (count / seconds, torch.cuda.max_memory_allocated() / 2**20)
        for precision, (rate, peak) in measured.items():
            name = "fp32" if precision == "no" else precision
            print(f"  {name:5s}: {rate:7.1f} triplets/s, peak {peak:.0f} MiB")


if __name__ == "__main__":
    main()
