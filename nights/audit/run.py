"""The audit as one call: :func:`run_audit`, on one process or sharded across many."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from numbers import Integral
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ..errors import DatasetNotFoundError, MetricError, NightsError
from ..metrics import Metric, as_metric, default_metric_names
from ..schema import BY_ORIGIN
from ..score_cache import ScoreCache
from ..table import load_jnd, load_nights, release_or_sample, resolve_source
from .fidelity import fidelity_on_sets
from .leaderboard import Leaderboard, build_leaderboard
from .report import write_outputs
from .scoring import jnd_scores, measure_scoring, score_table
from .stats import audit_frame, summarize

if TYPE_CHECKING:
    import torch


@dataclass
class AuditResult:
    """What :func:`run_audit` found and wrote.

    Attributes:
        summary: agreement per metric (what ``summary.json`` holds; see
            :func:`~nights.audit.stats.summarize`), with each metric's ``cache_id`` and
            ``input_size`` and the run's ``source``.
        audit: one row per (triplet, metric) (``audit.parquet``; see
            :func:`~nights.audit.stats.audit_frame`).
        paths: the files written, by kind (``parquet``, ``json``, ``html``, ``candidates``;
            ``leaderboard``, ``leaderboard_csv``, ``leaderboard_pairs_csv``).
        main_process: False on the ranks other than 0 of a distributed run, which write
            nothing (their ``summary`` and ``audit`` are rank 0's, read back).
        leaderboard: the :class:`~nights.audit.leaderboard.Leaderboard` when asked for (on
            rank 0).
    """

    summary: dict
    audit: pd.DataFrame
    paths: dict[str, Path] = field(default_factory=dict)
    main_process: bool = True
    leaderboard: Leaderboard | None = None


def run_audit(
    metrics: Sequence[str | Metric] | None = None,
    *,
    root: str | os.PathLike | None = None,
    split: str = "test",
    variant: str = "nights",
    min_votes: int | str | None = BY_ORIGIN,
    limit: int | None = None,
    out: str | os.PathLike | None = None,
    jnd: bool | None = None,
    cache: str | os.PathLike | None = None,
    batch_size: int | None = None,
    num_workers: int = 2,
    device: str | None = None,
    dtype: torch.dtype | None = None,
    precision: str | None = None,
    backend: str = "torch",
    fidelity_on: Sequence[str | os.PathLike] = (),
    report: bool = True,
    progress: bool | None = None,
    leaderboard: bool = False,
    seed: int = 0,
) -> AuditResult:
    """Scores the triplets of a split with each metric and audits their agreement with the
    human votes; writes ``audit.parquet``, ``summary.json``, ``label_noise_candidates.csv`` and
    ``report.html`` to ``out``.

    Launched on several processes (``torchrun``, ``accelerate launch``), each scores its shard
    of the table (by rank), writes it to ``out/parts/``, and rank 0 merges and writes the
    outputs once every rank is done; the result equals a single-process run.

    Args:
        metrics: metric specs (``psnr``, ``dreamsim:VARIANT``, ``hf:MODEL``, a plugin's name:
            see :func:`nights.metrics.get_metric`) or metrics (a
            :class:`~nights.metrics.PairMetric` or :class:`~nights.metrics.EmbeddingMetric`,
            e.g. a function wrapped by :func:`nights.metrics.pair_metric` or
            :func:`nights.metrics.embedding_metric`), each with its own name; default DreamSim
            when its ensemble weights are present, else PSNR and SSIM.
        root: the data (see :func:`nights.load_nights`); default the release in
            ``NIGHTS_HOME``, else the embedded synthetic sample.
        split / variant / min_votes: the rows, as :func:`nights.load_nights` (default: the
            test triplets with the vote filter of their origin: upstream's votes >= 6 for the
            release).
        limit: the first ``limit`` triplets only.
        out: the folder written (default ``nights-audit/SPLIT``).
        jnd: also the JND average precision of each metric (on :func:`nights.load_jnd`);
            default: with the leaderboard, when the data has JND votes.
        cache: the score cache (default ``NIGHTS_HOME/cache/scores.sqlite``); whatever it
            holds is not computed again.
        batch_size: images per batch (default: by the metric's device, see
            :func:`nights.metrics.batch_size_for`).
        num_workers: DataLoader processes decoding images.
        device / dtype: for the metrics named by a string (default: the best device; under a
            launcher with CUDA, the process's own GPU); ``dtype`` is DreamSim's autocast
            dtype, on CPU too (``torch.bfloat16``: the same as ``precision="bf16"``).
        precision / backend: DreamSim's, for the metrics named by a string: ``fp32``
            (default, exact), ``bf16``, ``fp16`` or ``int8``; ``torch`` (default) or
            ``onnxruntime`` (fp32 or int8, CPU). Anything but fp32 on torch is never silent:
            the summary records each metric's ``precision`` and ``backend`` and, under
            ``fidelity``, its fidelity against fp32 (:mod:`nights.audit.fidelity`) on the
            embedded sample and on each of ``fidelity_on``; the report shows it.
        fidelity_on: more triplets for those fidelity reports (NIGHTS folders, or folders of
            ``ref_K.png``, ``img_a_K.png``, ``img_b_K.png`` as upstream's demo images).
        report: write ``report.html`` (plots and thumbnails, matplotlib).
        progress: progress bars (default: when stderr is a terminal; only rank 0 shows them).
        leaderboard: also rank the metrics, with a paired bootstrap for each pair and what
            each scoring cost (:mod:`nights.audit.leaderboard`): ``leaderboard.md``,
            ``leaderboard.csv``, ``leaderboard_pairs.csv`` and a section of the report.
        seed: of every bootstrap (the intervals and the leaderboard's paired tests).

    Returns:
        The :class:`AuditResult`.

    Raises:
        MetricError: a metric spec names nothing or fails to load; two metrics share a name.

    Example::

        >>> from nights.audit import run_audit
        >>> result = run_audit(["psnr"], root=sample_root, out=scratch / "audit", report=False,
        ...                    cache=scratch / "scores.sqlite", num_workers=0, progress=False)
        >>> sorted(result.paths), result.audit["metric"].unique().tolist()
        (['candidates', 'json', 'parquet'], ['psnr'])
        >>> 0.5 < result.summary["metrics"]["psnr"]["overall"]["two_afc"] <= 1
        True
    """
    _check_options(limit, seed, device)
    with _processes() as (rank, world):
        progress = False if rank else progress
        root = release_or_sample(root)
        out = Path(out) if out is not None else Path("nights-audit") / split
        cache = ScoreCache(cache)
        options = {"batch_size": batch_size, "num_workers": num_workers, "progress": progress}
        if device is None:
            device = _default_device(world)
        metrics = _distinct_names(
            [
                as_metric(m, device=device, dtype=dtype, precision=precision, backend=backend)
                for m in metrics or default_metric_names()
            ]
        )
        rows = {"split": split, "root": root, "variant": variant, "min_votes": min_votes}
        tables = _tables_by_input_size(metrics, rows, limit, progress)
        reference = tables[metrics[0].input_size]
        frames, costs = [], {}
        for metric in metrics:
            with measure_scoring(metric.device) as cost:
                table = _shard(tables[metric.input_size], rank, world)
                frames.append(score_table(table, [metric], cache=cache, cost=cost, **options))
            costs[metric.name] = dataclasses.asdict(cost)
        scores = pd.concat(frames, ignore_index=True)
        if world > 1:
            scores = _merge_shards(scores, out / "parts", rank, world)
            if rank != 0:
                return _read_result(out)
        audit = audit_frame(_in_table_order(scores, reference, metrics), reference)
        if jnd is None:
            jnd = leaderboard and _has_jnd(root)
        jnd_precision = (
            jnd_scores(load_jnd(root, progress=progress), metrics, cache=cache, **options)
            if jnd
            else None
        )
        summary = summarize(audit, jnd=jnd_precision, seed=seed)
        for metric in metrics:
            entry = summary["metrics"][metric.name]
            entry.update(cache_id=metric.cache_id, input_size=metric.input_size)
            if hasattr(metric, "precision"):
                entry.update(precision=metric.precision, backend=metric.backend)
            fidelity = fidelity_on_sets(metric, fidelity_on, cache=cache, **options)
            if fidelity:
                entry["fidelity"] = fidelity
        summary["source"] = {
            **rows,
            "root": str(root),
            "limit": limit,
            "processes": world,
            "cache": str(cache.path),
        }
        board = build_leaderboard(audit, summary, costs, seed=seed) if leaderboard else None
        # The report's thumbnails come from the original images when a table holds them.
        paths = write_outputs(
            out, audit, summary, tables.get(None, reference), report=report, leaderboard=board
        )
        if world > 1:
            _barrier()  # the other ranks read the outputs back
        return AuditResult(summary, audit, paths, leaderboard=board)


def _check_options(limit, seed, device) -> None:
    """Options checked before anything is loaded: a limit of 0 meant the whole table, -1 an
    error about concatenation, a bad device a traceback from the first model moved to it."""
    if limit is not None and (
        isinstance(limit, bool) or not isinstance(limit, Integral) or limit < 1
    ):
        raise NightsError(f"limit must be a positive number of triplets, not {limit!r}")
    if isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0:
        raise NightsError(f"seed must be a non-negative integer, not {seed!r}")
    if device is not None:
        import torch

        try:
            torch.device(device)
        except (RuntimeError, TypeError):
            raise MetricError(
                f"device {device!r} is not a device (cpu, cuda, cuda:1, mps)"
            ) from None


def _distinct_names(metrics: list[Metric]) -> list[Metric]:
    """The metrics, once sure no two share a name (the audit's rows and tables are by name)."""
    names = [metric.name for metric in metrics]
    for name in names:
        if names.count(name) > 1:
            raise MetricError(f"two metrics are named {name!r}: give each its own name")
    return metrics


def _has_jnd(root: Path) -> bool:
    try:
        resolve_source(root, "jnd")
    except DatasetNotFoundError:
        return False
    return True


@contextlib.contextmanager
def _processes() -> Iterator[tuple[int, int]]:
    """``(rank, world size)`` of a torchrun or accelerate launch, ``(0, 1)`` otherwise; the
    process group is set up for the duration when the launcher (or the caller) has not."""
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        yield rank, world
        return
    import torch

    if torch.distributed.is_initialized():
        yield rank, world
        return
    # The processes only wait for one another (no tensor is exchanged): the CPU backend serves
    # whatever device the metrics run on.
    torch.distributed.init_process_group("gloo")
    try:
        yield rank, world
    finally:
        torch.distributed.destroy_process_group()


def _barrier() -> None:
    import torch

    torch.distributed.barrier()


def _default_device(world: int) -> str | None:
    """A GPU per process when launched on several and CUDA is there, shared round-robin when
    there are more processes than GPUs (None: the best device)."""
    if world == 1:
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    return f"cuda:{int(os.environ.get('LOCAL_RANK', '0')) % torch.cuda.device_count()}"


def _tables_by_input_size(metrics, rows: dict, limit: int | None, progress) -> dict:
    """One table per input size the metrics declare: the pre-resized copy scores fast."""
    tables = {}
    for size in dict.fromkeys(metric.input_size for metric in metrics):
        table = load_nights(**rows, image_size=size, progress=progress)
        tables[size] = table.select(range(min(limit, len(table)))) if limit else table
    return tables


def _shard(table, rank: int, world: int):
    if world == 1:
        return table
    from datasets.distributed import split_dataset_by_node

    return split_dataset_by_node(table, rank=rank, world_size=world)


def _merge_shards(scores: pd.DataFrame, parts: Path, rank: int, world: int) -> pd.DataFrame:
    """Every rank's scores, once all have written theirs (rank 0 reads them; others get their
    own back)."""
    parts.mkdir(parents=True, exist_ok=True)
    scores.to_parquet(parts / f"scores-rank{rank:03d}.parquet", index=False)
    _barrier()
    if rank != 0:
        return scores
    return pd.concat(
        [pd.read_parquet(parts / f"scores-rank{r:03d}.parquet") for r in range(world)],
        ignore_index=True,
    )


def _read_result(out: Path) -> AuditResult:
    """On ranks other than 0: rank 0's result, read back once it has written it."""
    _barrier()
    return AuditResult(
        json.loads((out / "summary.json").read_text()),
        pd.read_parquet(out / "audit.parquet"),
        main_process=False,
    )


def _in_table_order(scores: pd.DataFrame, table, metrics: list[Metric]) -> pd.DataFrame:
    """Rows by metric (in the order given), then by the table's order of triplets."""
    order = {identifier: index for index, identifier in enumerate(table["id"])}
    metric_order = {metric.name: index for index, metric in enumerate(metrics)}
    return scores.sort_values(
        by=["metric", "id"],
        key=lambda column: column.map(metric_order if column.name == "metric" else order),
    ).reset_index(drop=True)
