"""DreamSim's speed per precision and backend, against our fp32 eager model in the same run.

    python benchmarks/bench_dreamsim.py [--variants ensemble,dino_vitb16] [--batches 1,8,32]
        [--images 32] [--compare upstream,bf16,int8,onnx,onnx-int8] [--sample-triplets 24]

Weights are random but in the released sizes and file layout (ViT-B, LoRA adapters), so the
arithmetic is that of the real models; ``--cache-dir DIR`` takes the released files there
instead (one variant's zip or files per folder, e.g. ``$DREAMSIM_HOME``). For each variant
and batch size it times ``embed(batch)`` (images/s counts images embedded, after a warm-up) of:

* fp32: ``dreamsim()`` as is, LoRA merged: the baseline every ratio is against;
* upstream: ``model(ref, x)`` per pair as upstream's evaluation does it, re-embedding the
  reference every time, with PEFT LoRA layers (unmerged), fp32;
* bf16: autocast (CPU: oneDNN, AVX512-BF16 where the CPU has it); int8: torch's dynamic int8
  linear layers (CPU only);
* onnx, onnx-int8: the exported graph on ONNX Runtime (CPU), fp32 or its int8 quantization;
* on CUDA also ``compile``: bf16 with ``torch.compile``.

Then the fidelity of each against fp32 (``dreamsim.measure_fidelity``): on the demo triplet
(``../shared/data/dreamsim_demo``, when present) and on the first ``--sample-triplets`` of the
embedded synthetic sample (with its votes): max |distance difference|, decisions flipped,
change of the 2AFC score. With random weights these say how much a precision perturbs a ViT-B
of this shape, not what it does to the released weights (``--cache-dir`` measures that).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dreamsim import dreamsim, measure_fidelity, onnxruntime_model, preprocess, with_precision
from nights import make_synthetic_nights, read_data_csv
from nights.synthetic import EMBEDDED_SAMPLE
from tests.dreamsim_checkpoints import VARIANTS, write_release

DEMO = Path(__file__).resolve().parents[2] / "shared" / "data" / "dreamsim_demo"
CPU_ONLY = ("int8", "onnx", "onnx-int8")


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


def load_triplets(folder: Path, rows) -> tuple[torch.Tensor, ...]:
    """``ref, left, right`` through upstream's preprocessing, and ``p_right``."""

    def stack(paths):
        return torch.cat([preprocess(Image.open(folder / p)) for p in paths])

    return (
        stack(rows["ref_path"]),
        stack(rows["left_path"]),
        stack(rows["right_path"]),
        torch.tensor(rows["right_vote"].to_numpy(), dtype=torch.float64),
    )


def fidelity_sets(scratch: Path, sample_triplets: int) -> dict[str, tuple]:
    sets = {}
    if (DEMO / "ref_1.png").is_file():
        demo = [preprocess(Image.open(DEMO / f"{n}_1.png")) for n in ("ref", "img_a", "img_b")]
        sets["demo triplet"] = (*demo, None)
    if sample_triplets:
        root = make_synthetic_nights(scratch / "sample", **EMBEDDED_SAMPLE) / "nights"
        rows = read_data_csv(root / "data.csv").head(sample_triplets)
        sets[f"sample ({len(rows)})"] = load_triplets(root, rows)
    return sets


def candidates(model, options: dict, compare: list[str], scratch: Path) -> dict:
    """The models to compare with ``model`` (fp32, eager), by name."""
    built = {}
    for name in compare:
        if name == "upstream":
            built[name], _ = dreamsim(**options, merge=False)
        elif name in ("bf16", "int8"):
            built[name] = with_precision(model, name)
        elif name.startswith("onnx"):
            precision = "int8" if name == "onnx-int8" else "fp32"
            built[name] = onnxruntime_model(model, precision, cache_dir=scratch / "onnx")
        elif name == "compile":
            built[name], _ = dreamsim(**options, dtype=torch.bfloat16, compile=True)
    return built


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    released = [name for name in VARIANTS if name != "test_tiny"]  # the tests' tiny ViT
    parser.add_argument("--variants", default=",".join(released))
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--images", type=int, default=32, help="images timed per setting")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--compare",
        default=None,
        help="upstream,bf16,int8,onnx,onnx-int8,compile (default: all but compile on CPU; "
        "upstream,bf16,compile on CUDA)",
    )
    parser.add_argument("--sample-triplets", type=int, default=24)
    parser.add_argument("--cache-dir", default=None, help="released weights instead of random")
    args = parser.parse_args()
    device = args.device
    default = "upstream,bf16,int8,onnx,onnx-int8" if device == "cpu" else "upstream,bf16,compile"
    compare = (args.compare or default).split(",")
    if device != "cpu" and set(compare) & set(CPU_ONLY):
        parser.error(f"{', '.join(CPU_ONLY)} run on CPU only")
    name = (
        torch.cuda.get_device_name()
        if device == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    print(f"device: {name}; torch {torch.__version__}")
    print(
        f"{'variant':<22}{'batch':>6}{'fp32 img/s':>12}"
        + "".join(f"{c:>11}" for c in compare)
        + f"{'peak MB':>9}",
        flush=True,
    )
    fidelity_rows = []
    with tempfile.TemporaryDirectory(prefix="bench-dreamsim-") as scratch:
        scratch = Path(scratch)
        sets = fidelity_sets(scratch, args.sample_triplets)
        for variant in args.variants.split(","):
            folder = Path(args.cache_dir) if args.cache_dir else scratch / variant
            if not args.cache_dir:
                write_release(folder, variant, width=768, depth=12, proj=512)
            options = {
                "cache_dir": folder,
                "dreamsim_type": variant.removesuffix("_patch"),
                "use_patch_model": variant.endswith("_patch"),
                "device": device,
            }
            model, _ = dreamsim(**options)
            others = candidates(model, options, compare, scratch)
            for batch in (int(b) for b in args.batches.split(",")):
                x = torch.rand(batch, 3, 224, 224, device=device)
                ref = torch.rand(batch, 3, 224, 224, device=device)
                with torch.inference_mode():
                    exact = images_per_second(
                        lambda b, x=x, m=model: m.embed(x), args.images, batch
                    )
                    row = f"{variant:<22}{batch:>6}{exact:>12.2f}"
                    for label, other in others.items():
                        if label == "upstream":
                            step = lambda b, x=x, ref=ref, m=other: m(ref, x)  # noqa: E731
                        else:
                            step = lambda b, x=x, m=other: m.embed(x)  # noqa: E731
                        speed = images_per_second(step, args.images, batch)
                        row += f"{speed / exact:>10.2f}x"
                print(row + f"{peak_memory_mb(device):>9.0f}", flush=True)
            for set_name, (ref, left, right, p_right) in sets.items():
                for label, other in others.items():
                    if label == "upstream":
                        continue  # the same fp32 weights, unmerged: a speed baseline only
                    report = measure_fidelity(
                        model, other, ref.to(device), left.to(device), right.to(device), p_right
                    )
                    fidelity_rows.append((variant, set_name, label, report))
            del model, others
    print(
        f"\n{'variant':<22}{'triplets':<16}{'vs fp32':<11}{'max |Δd|':>10}{'flipped':>9}"
        f"{'2AFC change':>13}"
    )
    for variant, set_name, label, report in fidelity_rows:
        change = "-" if report.two_afc_change is None else f"{report.two_afc_change:+.4f}"
        print(
            f"{variant:<22}{set_name:<16}{label:<11}{report.max_abs_distance_difference:>10.5f}"
            f"{report.flipped_share:>8.1%}{change:>13}"
        )


if __name__ == "__main__":
    main()
