"""Embedding speed of our DreamSim vs. an upstream-style forward, same weights, same run.

    python benchmarks/bench_dreamsim.py [--variants ensemble,dino_vitb16] [--images 16]

Weights are random but in the released sizes and file layout (ViT-B, LoRA adapters), so the
arithmetic is that of the real models. For each variant and batch size (1, 8, 32):

* ours: ``model.embed(batch)`` once per image, LoRA merged into the weights;
* upstream-style: ``model(ref, x)`` per pair as upstream's evaluation does it, re-embedding
  the reference every time, with PEFT LoRA layers (unmerged), fp32.

Images/s counts the images ``x`` embedded. Peak memory is the process's peak RSS on CPU, the
peak allocated memory on CUDA. On a CUDA device it also reports bf16 autocast and
``torch.compile`` runs, with the device's name.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dreamsim import dreamsim
from tests.dreamsim_checkpoints import VARIANTS, write_release


def images_per_second(step, count: int, batch: int) -> float:
    step(batch)  # warm-up
    started = time.perf_counter()
    done = 0
    while done < count:
        step(batch)
        done += batch
    return done / (time.perf_counter() - started)


def peak_memory_mb(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 1e6
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    released = [name for name in VARIANTS if name != "test_tiny"]  # the tests' tiny ViT
    parser.add_argument("--variants", default=",".join(released))
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--images", type=int, default=32, help="images timed per setting")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = args.device
    name = (
        torch.cuda.get_device_name()
        if device == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    print(f"device: {name}; torch {torch.__version__}")
    print(
        f"{'variant':<22}{'batch':>6}{'upstream-style':>16}{'ours':>10}{'ratio':>8}"
        + ("" if device == "cpu" else f"{'bf16':>10}{'bf16+compile':>14}")
        + f"{'peak MB':>10}"
    )
    with tempfile.TemporaryDirectory() as scratch:
        for variant in args.variants.split(","):
            folder = Path(scratch) / variant
            write_release(folder, variant, width=768, depth=12, proj=512)
            base, patch = variant.removesuffix("_patch"), variant.endswith("_patch")
            options = {
                "cache_dir": folder,
                "dreamsim_type": base,
                "use_patch_model": patch,
                "device": device,
            }
            ours, _ = dreamsim(**options)
            upstream, _ = dreamsim(**options, merge=False)
            for batch in (int(b) for b in args.batches.split(",")):
                x = torch.rand(batch, 3, 224, 224, device=device)
                ref = torch.rand(batch, 3, 224, 224, device=device)
                with torch.inference_mode():
                    slow = images_per_second(
                        lambda b, x=x, ref=ref, m=upstream: m(ref, x), args.images, batch
                    )
                    fast = images_per_second(lambda b, x=x, m=ours: m.embed(x), args.images, batch)
                    row = f"{variant:<22}{batch:>6}{slow:>16.1f}{fast:>10.1f}{fast / slow:>7.1f}x"
                    if device != "cpu":
                        ours.autocast_dtype = torch.bfloat16
                        mixed = images_per_second(
                            lambda b, x=x, m=ours: m.embed(x), args.images, batch
                        )
                        compiled, _ = dreamsim(**options, dtype=torch.bfloat16, compile=True)
                        fused = images_per_second(
                            lambda b, x=x, m=compiled: m.embed(x), args.images, batch
                        )
                        ours.autocast_dtype = None
                        row += f"{mixed:>10.1f}{fused:>14.1f}"
                print(row + f"{peak_memory_mb(device):>10.0f}", flush=True)


if __name__ == "__main__":
    main()
