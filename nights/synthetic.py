"""A synthetic NIGHTS, written in the exact release layout: the embedded sample.

Every triplet is a procedurally drawn reference scene and two distortions of it, one mild and
one strong. Simulated humans prefer the mild one with a probability that grows with the gap in
strength, and a fraction of triplets get the "wrong" unanimous answer, so a sensible metric
(PSNR, DreamSim) agrees with the votes well above chance and a random one sits near 50%.

Layout written under ``out`` (the same as ``NIGHTS_HOME`` after downloading)::

    nights/data.csv                       the exact release header, unanimous votes 1..11
    nights/ref/NNN/MMM.png                numbering with gaps, several NNN folders
    nights/distort/NNN/MMM_{0,1}.png      some triplets list MMM_1 as left (swapped sides)
    nights_unfiltered/nights_raw.csv      non-unanimous votes, other column names, extra column
    nights_unfiltered/{ref,distort}/...
    jnd_votes.csv                         same/different fractions for ref vs. each distortion

Example::

    >>> from nights.synthetic import make_synthetic_nights
    >>> home = make_synthetic_nights(scratch / "sample", n_triplets=60, image_size=64)
    >>> sorted(p.name for p in home.iterdir())
    ['jnd_votes.csv', 'nights', 'nights_unfiltered']
"""

from __future__ import annotations

import csv
import math
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ._files import remove_abandoned
from ._paths import DATA_CSV, JND_CSV, NIGHTS_DIR, RAW_CSV, UNFILTERED_DIR
from .errors import ArgumentError, OutputExistsError
from .schema import DATA_CSV_COLUMNS

# ImageNet class names carry commas; the others come from the non-ImageNet sources of NIGHTS.
IMAGENET_CATEGORIES = (
    "tench, Tinca tinca",
    "goldfish, Carassius auratus",
    "crayfish, crawfish, crawdad, crayfish",
    "tabby, tabby cat",
    "espresso",
    "volcano",
    "lakeside, lakeshore",
    "red wine",
)
OTHER_CATEGORIES = (
    "sunflower",
    "apple pie",
    'a "vintage" car',
    "mountain",
    "bus",
    "rainforest, tropical",
    "orchid",
    "bowling alley",
)


@dataclass
class _Shape:
    kind: str
    center: np.ndarray  # fractions of the image size
    radius: float
    color: np.ndarray


@dataclass
class _Scene:
    top: np.ndarray
    bottom: np.ndarray
    shapes: list[_Shape]
    noise_seed: int


def _random_scene(rng: np.random.Generator) -> _Scene:
    shapes = [
        _Shape(
            kind=str(rng.choice(["ellipse", "rectangle"])),
            center=rng.uniform(0.15, 0.85, 2),
            radius=float(rng.uniform(0.08, 0.25)),
            color=rng.uniform(0, 255, 3),
        )
        for _ in range(int(rng.integers(3, 7)))
    ]
    return _Scene(rng.uniform(0, 255, 3), rng.uniform(0, 255, 3), shapes, int(rng.integers(2**31)))


def _distort(scene: _Scene, strength: float, rng: np.random.Generator) -> _Scene:
    """Moves, recolours and resizes the shapes and shifts the background by ``strength``."""

    def shift_color(color):
        return np.clip(color + rng.normal(0, 120 * strength, 3), 0, 255)

    shapes = [
        _Shape(
            shape.kind,
            np.clip(shape.center + rng.normal(0, 0.18 * strength, 2), 0, 1),
            shape.radius * float(np.exp(rng.normal(0, 0.5 * strength))),
            shift_color(shape.color),
        )
        for shape in scene.shapes
    ]
    return _Scene(
        shift_color(scene.top), shift_color(scene.bottom), shapes, int(rng.integers(2**31))
    )


def _render(scene: _Scene, size: int, blur: float = 0.0) -> Image.Image:
    ramp = np.linspace(0.0, 1.0, size)[:, None, None]
    background = (1 - ramp) * scene.top + ramp * scene.bottom
    image = Image.fromarray(np.broadcast_to(background, (size, size, 3)).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for shape in scene.shapes:
        cx, cy = shape.center * size
        r = shape.radius * size
        box = [cx - r, cy - r * 0.8, cx + r, cy + r * 0.8]
        color = tuple(int(c) for c in shape.color)
        (draw.ellipse if shape.kind == "ellipse" else draw.rectangle)(box, fill=color)
    if blur > 0:
        image = image.filter(ImageFilter.GaussianBlur(blur * size / 256))
    # Sensor-like grain makes the PNGs as costly to decode as photographic ones.
    noise = np.random.default_rng(scene.noise_seed).bytes(size * size * 3)
    grain = np.frombuffer(noise, np.uint8).reshape(size, size, 3) % 13
    pixels = np.asarray(image, dtype=np.int16) + grain - 6
    return Image.fromarray(np.clip(pixels, 0, 255, out=pixels).astype(np.uint8))


def _render_to_file(task: tuple[_Scene, int, float, Path]) -> None:
    scene, size, blur, path = task
    path.parent.mkdir(parents=True, exist_ok=True)
    _render(scene, size, blur).save(path, format="PNG", compress_level=1)


def _render_all(tasks: list[tuple[_Scene, int, float, Path]], jobs: int) -> None:
    """Renders in ``jobs`` processes; the bytes do not depend on the number of jobs."""
    if jobs <= 1 or len(tasks) < 16:
        for task in tasks:
            _render_to_file(task)
        return
    with ProcessPoolExecutor(jobs) as pool:
        for _ in pool.map(_render_to_file, tasks, chunksize=8):
            pass


def _slots(rng: np.random.Generator, n: int) -> list[tuple[int, int]]:
    """(folder, number) pairs with gaps: about 60 triplets a folder, numbers drawn from 0..999."""
    folders = max(1, min(100, math.ceil(n / 60)))
    counts = np.full(folders, n // folders)
    counts[: n % folders] += 1
    slots = []
    for folder, count in enumerate(counts):
        numbers = np.sort(rng.choice(1000, size=int(count), replace=False))
        slots.extend((folder, int(number)) for number in numbers)
    return slots


@dataclass
class _Triplet:
    folder: int
    number: int
    scene: _Scene
    mild: _Scene
    strong: _Scene
    mild_strength: float
    strong_strength: float
    mild_is_file_0: bool
    swapped: bool


def _write_triplets(
    root: Path, n: int, size: int, rng: np.random.Generator, jobs: int
) -> list[_Triplet]:
    triplets, tasks = [], []
    for folder, number in _slots(rng, n):
        scene = _random_scene(rng)
        mild_strength = float(rng.uniform(0.05, 0.3))
        strong_strength = float(rng.uniform(0.35, 0.9))
        mild, strong = _distort(scene, mild_strength, rng), _distort(scene, strong_strength, rng)
        triplet = _Triplet(
            folder,
            number,
            scene,
            mild,
            strong,
            mild_strength,
            strong_strength,
            bool(rng.random() < 0.5),
            bool(rng.random() < 0.2),
        )
        stem = f"{folder:03d}/{number:03d}"
        tasks.append((scene, size, 0.0, root / "ref" / f"{stem}.png"))
        files = (mild, strong) if triplet.mild_is_file_0 else (strong, mild)
        for index, distorted in enumerate(files):
            strength = mild_strength if distorted is mild else strong_strength
            tasks.append((distorted, size, 2 * strength, root / "distort" / f"{stem}_{index}.png"))
        triplets.append(triplet)
    _render_all(tasks, jobs)
    return triplets


def _paths(triplet: _Triplet) -> tuple[str, str, str, bool]:
    """ref, left, right paths and whether the left one is the mild distortion."""
    stem = f"{triplet.folder:03d}/{triplet.number:03d}"
    first, second = f"distort/{stem}_0.png", f"distort/{stem}_1.png"
    left, right = (second, first) if triplet.swapped else (first, second)
    left_is_mild = triplet.mild_is_file_0 != triplet.swapped
    return f"ref/{stem}.png", left, right, left_is_mild


def _p_mild(triplet: _Triplet) -> float:
    """Chance that one simulated person picks the mild distortion."""
    gap = triplet.strong_strength - triplet.mild_strength
    return 1.0 / (1.0 + math.exp(-8.0 * gap))


def _category(rng: np.random.Generator) -> tuple[str, bool]:
    is_imagenet = bool(rng.random() < 0.5)
    pool = IMAGENET_CATEGORIES if is_imagenet else OTHER_CATEGORIES
    return str(pool[int(rng.integers(len(pool)))]), is_imagenet


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def _split_of(position: float, fractions: tuple[float, float, float]) -> str:
    if position < fractions[0]:
        return "train"
    return "val" if position < fractions[0] + fractions[1] else "test"


def _write_release(root: Path, n: int, size: int, rng, split_fractions, jobs) -> list[_Triplet]:
    triplets = _write_triplets(root, n, size, rng, jobs)
    rows = []
    next_id = 0
    for triplet in triplets:
        ref, left, right, left_is_mild = _paths(triplet)
        # Unanimous by construction (the release kept only those): one answer for every vote.
        chose_mild = rng.random() < _p_mild(triplet) - 0.08
        chose_left = chose_mild == left_is_mild
        votes = int(np.clip(rng.poisson(7.5), 1, 11))
        prompt, is_imagenet = _category(rng)
        split = _split_of(float(rng.random()), split_fractions)
        # Vote fractions written both as "1"/"0" and "1.0"/"0.0", as in the wild.
        left_vote = ("1" if chose_left else "0") + (".0" if next_id % 3 else "")
        right_vote = ("0" if chose_left else "1") + (".0" if next_id % 3 else "")
        rows.append(
            [
                next_id,
                left_vote,
                right_vote,
                votes,
                ref,
                left,
                right,
                split,
                "True" if is_imagenet else "False",
                prompt,
            ]
        )
        next_id += int(rng.integers(1, 3))  # ids with gaps
    _write_csv(root / DATA_CSV, list(DATA_CSV_COLUMNS), rows)
    return triplets


def _write_unfiltered(root: Path, n: int, size: int, rng, jobs) -> None:
    rows = []
    for index, triplet in enumerate(_write_triplets(root, n, size, rng, jobs)):
        ref, left, right, left_is_mild = _paths(triplet)
        votes = int(rng.integers(1, 12))
        mild_votes = int(rng.binomial(votes, _p_mild(triplet) - 0.08))
        left_votes = mild_votes if left_is_mild else votes - mild_votes
        prompt, is_imagenet = _category(rng)
        rows.append(
            [
                index,
                ref,
                left,
                right,
                round(left_votes / votes, 6),
                round(1 - left_votes / votes, 6),
                votes,
                prompt,
                is_imagenet,
                int(rng.integers(1, 4)),
            ]
        )
    header = [
        "id",
        "ref",
        "left",
        "right",
        "left_vote",
        "right_vote",
        "num_votes",
        "prompt",
        "is_imagenet",
        "round",
    ]
    _write_csv(root / RAW_CSV, header, rows)


def _write_jnd(path: Path, triplets: list[_Triplet], rng) -> None:
    rows = []
    for index, triplet in enumerate(triplets):
        if index % 2:  # JND was collected on a subset of triplets
            continue
        ref, left, right, left_is_mild = _paths(triplet)
        for distort, is_mild in ((left, left_is_mild), (right, not left_is_mild)):
            strength = triplet.mild_strength if is_mild else triplet.strong_strength
            votes = int(rng.integers(3, 6))
            same = rng.binomial(votes, math.exp(-5.0 * strength))
            rows.append([index, ref, distort, round(same / votes, 6), votes])
    _write_csv(path, ["id", "ref_path", "distort_path", "same", "votes"], rows)


def make_synthetic_nights(
    out: str | os.PathLike,
    n_triplets: int = 240,
    image_size: int = 768,
    seed: int = 0,
    *,
    n_unfiltered: int | None = None,
    split_fractions: tuple[float, float, float] = (0.6, 0.15, 0.25),
    overwrite: bool = False,
    jobs: int | None = None,
) -> Path:
    """Writes a synthetic NIGHTS home folder and returns its path.

    Args:
        out: the folder to create (laid out like ``NIGHTS_HOME``: ``nights/``,
            ``nights_unfiltered/``, ``jnd_votes.csv``).
        n_triplets: rows of ``nights/data.csv``.
        image_size: side of the square PNGs (768 as in the release; small for fast tests).
        seed: the same seed writes the same bytes.
        n_unfiltered: rows of the unfiltered set (default: half of ``n_triplets``; 0 for none).
        split_fractions: train/val/test shares.
        overwrite: replace ``out`` if it exists (otherwise an existing folder is an error).
        jobs: processes rendering images (default: one per CPU); the output does not depend on it.

    The folder is written next to ``out`` and renamed into place when complete, so an
    interrupted run never leaves a sample that looks finished.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} exists; pass overwrite=True to replace it")
    if n_triplets < 1 or image_size < 8:
        raise ArgumentError("n_triplets must be >= 1 and image_size >= 8")
    rng = np.random.default_rng(seed)
    jobs = jobs or os.cpu_count() or 1
    remove_abandoned(out)
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        triplets = _write_release(
            partial / NIGHTS_DIR, n_triplets, image_size, rng, split_fractions, jobs
        )
        n_unfiltered = n_triplets // 2 if n_unfiltered is None else n_unfiltered
        if n_unfiltered:
            _write_unfiltered(partial / UNFILTERED_DIR, n_unfiltered, image_size, rng, jobs)
        _write_jnd(partial / JND_CSV, triplets, rng)
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(partial, out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return out


EMBEDDED_SAMPLE = {"n_triplets": 240, "image_size": 256, "seed": 0}


def ensure_sample(home: str | os.PathLike | None = None) -> Path:
    """The embedded sample (240 triplets, 256 px, seed 0), written on first use.

    It lives in ``NIGHTS_HOME/sample`` unless ``home`` is given; the main job and the README's
    demo run on it when no real NIGHTS data is present.
    """
    from ._files import file_lock
    from ._paths import nights_home

    out = Path(home) if home is not None else nights_home() / "sample"
    if (out / NIGHTS_DIR / DATA_CSV).is_file():
        return out
    with file_lock(out.parent / f".{out.name}.lock"):  # e.g. two ranks on a fresh machine
        if not (out / NIGHTS_DIR / DATA_CSV).is_file():
            make_synthetic_nights(out, overwrite=True, **EMBEDDED_SAMPLE)
    return out
