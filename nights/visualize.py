"""NIGHTS in FiftyOne: one group per triplet, slices ``ref``, ``left`` and ``right``.

Every slice carries the triplet's fields (the App's sidebar and filters follow the pinned
slice): ``triplet_id, split, prompt, is_imagenet, votes, left_vote, right_vote`` and
``human_choice`` (a ``Classification``, confidence = share of the majority). An audit adds, per
metric, an embedded document ``<m>`` (``d_left, d_right, margin, normalized_margin, confidence,
agree``) and the label ``<m>_choice``, and the tags
``disagree``, ``low_votes`` and ``label_noise_candidate`` (from the audit's first metric).
Saved views answer the usual questions: ``disagreements`` (sorted by margin),
``label_noise_candidates`` and one view per split. Running again with a new audit updates these
fields in place; a second metric adds its fields beside the first.

FiftyOne is imported here only: ``import nights`` never loads it.

Example (it needs FiftyOne's MongoDB, so it is not run with the other examples)::

    >>> from nights import load_nights
    >>> from nights.visualize import to_fiftyone
    >>> audit = "nights-audit/test/audit.parquet"
    >>> dataset = to_fiftyone(load_nights("test"), audit=audit)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import ArgumentError, MetricError
from .schema import IMAGE_COLUMNS as SLICES
from .table import table_meta
from .votes import votes_frame

LOW_VOTES = 6


def field_prefix(metric: str) -> str:
    """A field-name-safe form of a metric name: ``dreamsim:ensemble`` -> ``dreamsim_ensemble``."""
    return re.sub(r"\W+", "_", metric).strip("_")


def _filepaths(table) -> dict[str, list[str]]:
    """Absolute file paths of each slice (FiftyOne reads images from disk)."""
    root = Path(table_meta(table).get("root", ""))
    storages = table.select_columns(list(SLICES)).with_format("arrow")
    paths: dict[str, list[str]] = {name: [] for name in SLICES}
    relatives = {name: table[f"{name}_path"] for name in SLICES}
    for start in range(0, len(table), 1024):
        for offset, row in enumerate(storages[start : start + 1024].to_pylist()):
            for name in SLICES:
                stored = row[name].get("path") if row[name] else None
                if stored and Path(stored).is_absolute():
                    paths[name].append(stored)
                else:
                    paths[name].append(str(root / relatives[name][start + offset]))
    return paths


def _build(dataset, table, progress: bool | None) -> None:
    import fiftyone as fo

    votes = votes_frame(table)
    paths = _filepaths(table)
    dataset.add_group_field("group", default="ref")
    samples = []
    for index, row in enumerate(votes.itertuples(index=False)):
        group = fo.Group()
        majority = max(row.left_vote, row.right_vote)
        choice = "right" if row.right_vote > 0.5 else "left" if row.right_vote < 0.5 else "tie"
        fields = {
            "triplet_id": int(row.id),
            "split": row.split,
            "prompt": row.prompt,
            "is_imagenet": bool(row.is_imagenet),
            "votes": int(row.votes),
            "left_vote": float(row.left_vote),
            "right_vote": float(row.right_vote),
            "human_choice": fo.Classification(label=choice, confidence=float(majority)),
        }
        tags = ["low_votes"] if row.votes < LOW_VOTES else []
        samples.extend(
            fo.Sample(
                filepath=paths[name][index], group=group.element(name), tags=list(tags), **fields
            )
            for name in SLICES
        )
    dataset.add_samples(samples, progress=bool(progress))


def _apply_audit(dataset, audit: pd.DataFrame, primary: bool) -> None:
    """Writes one metric's fields on every slice (in place); tags from the primary metric."""
    import fiftyone as fo
    from fiftyone import ViewField as F

    metric = audit["metric"].iloc[0]
    prefix = field_prefix(metric)
    flat = dataset.select_group_slices(list(SLICES))
    ids = flat.values("triplet_id")
    by_id = audit.set_index("id")
    missing = set(ids) - set(by_id.index)
    if missing:
        raise ArgumentError(
            f"the audit has no row for {len(missing)} triplet(s) of the dataset, "
            f"e.g. id {sorted(missing)[0]}"
        )
    # One object per triplet, shared by its three slices, and two bulk writes per metric: the
    # numbers in one embedded document, the choice as a label (so the App draws it).
    triplets = by_id.loc[sorted(set(ids))]
    numbers = [
        column
        for column in ("d_left", "d_right", "margin", "normalized_margin", "confidence")
        if column in triplets
    ]
    records = triplets[numbers].astype(float).to_dict("records")
    agree = (
        triplets["agree"].astype(bool).tolist() if "agree" in triplets else [None] * len(triplets)
    )
    confidences = triplets.get("confidence", pd.Series(np.nan, triplets.index))
    documents = dict(
        zip(
            triplets.index,
            (
                fo.DynamicEmbeddedDocument(**record, agree=value)
                for record, value in zip(records, agree)
            ),
        )
    )
    choices = dict(
        zip(
            triplets.index,
            (
                fo.Classification(label=choice, confidence=float(confidence))
                for choice, confidence in zip(triplets["model_choice"], confidences)
            ),
        )
    )
    flat.set_values(prefix, [documents[i] for i in ids], validate=False)
    flat.set_values(f"{prefix}_choice", [choices[i] for i in ids], validate=False)
    if not primary or "agree" not in triplets:
        return
    flat.untag_samples(["disagree", "label_noise_candidate"])
    flat.match(F(f"{prefix}.agree") == False).tag_samples("disagree")  # noqa: E712
    noise = set(audit.loc[audit["label_noise_candidate"].astype(bool), "id"])
    flat.match(F("triplet_id").is_in(sorted(noise))).tag_samples("label_noise_candidate")
    disagreements = dataset.match(F(f"{prefix}.agree") == False).sort_by(  # noqa: E712
        F(f"{prefix}.margin").abs(), reverse=True
    )
    dataset.save_view(
        "disagreements",
        disagreements,
        overwrite=True,
        description=f"{metric} disagrees with the humans, largest margin first",
    )
    dataset.save_view(
        "label_noise_candidates",
        dataset.match_tags("label_noise_candidate"),
        overwrite=True,
        description="confident disagreements, unanimous humans",
    )


def to_fiftyone(
    table,
    name: str = "nights",
    audit: str | Path | pd.DataFrame | None = None,
    embeddings: str | None = None,
    persistent: bool = True,
    overwrite: bool = False,
    progress: bool | None = None,
    score_cache: str | Path | None = None,
):
    """A grouped FiftyOne dataset of the triplets, built once and updated in place.

    Args:
        table: a triplet table (:func:`nights.load_nights`).
        name: the dataset's name; if it exists (and ``overwrite`` is False) it is reused and
            only the audit fields are written again.
        audit: ``audit.parquet`` from ``nights audit`` (or its DataFrame): distances, model
            choices, agreement and tags, per metric.
        embeddings: a metric of the audit whose cached embeddings to store and visualise
            (see :func:`add_embeddings`).
        persistent / overwrite: as ``fiftyone.Dataset``.
        score_cache: the audit's score cache (default ``$NIGHTS_HOME/cache/scores.sqlite``).
    """
    import fiftyone as fo
    from fiftyone import ViewField as F

    if fo.dataset_exists(name) and not overwrite:
        dataset = fo.load_dataset(name)
    else:
        dataset = fo.Dataset(name, persistent=persistent, overwrite=overwrite)
        _build(dataset, table, progress)
        for split in sorted(set(dataset.distinct("split"))):
            dataset.save_view(
                f"split_{split}",
                dataset.match(F("split") == split),
                overwrite=True,
                description=f"the {split} triplets",
            )
    if audit is not None:
        frame = audit if isinstance(audit, pd.DataFrame) else pd.read_parquet(audit)
        for position, (_, part) in enumerate(frame.groupby("metric", sort=False)):
            _apply_audit(dataset, part, primary=position == 0)
    if embeddings is not None:
        if audit is None or isinstance(audit, pd.DataFrame):
            raise MetricError(
                "embeddings= needs the audit's path (its summary.json names the cache entries)"
            )
        summary = json.loads((Path(audit).parent / "summary.json").read_text())
        embeddings = _audited_name(embeddings, summary["metrics"])
        entry = summary["metrics"][embeddings]
        if score_cache is None:
            score_cache = summary.get("source", {}).get("cache")
        from .score_cache import ScoreCache
        from .table import load_nights

        meta = table_meta(table)
        embedded = load_nights(
            "all",
            root=meta.get("root"),
            variant=meta.get("variant", "nights"),
            min_votes=None,
            image_size=entry["input_size"],
            progress=progress,
        )
        add_embeddings(
            dataset, embeddings, entry["cache_id"], embedded, cache=ScoreCache(score_cache)
        )
    return dataset


def _audited_name(name: str, audited: dict) -> str:
    """The audited embedding metric that ``name`` means: itself, or the one metric named
    ``name:SOMETHING`` (``dreamsim`` for ``dreamsim:ensemble``)."""
    embedded = [metric for metric, entry in audited.items() if entry.get("input_size")]
    if name in embedded:
        return name
    matches = [metric for metric in embedded if metric.split(":")[0] == name]
    if len(matches) == 1:
        return matches[0]
    raise MetricError(
        f"the audit has no embedding metric {name!r} (its embedding metrics: "
        f"{', '.join(embedded) or 'none'})"
    )


def add_embeddings(
    dataset, metric: str, cache_id: str, embedded, cache=None, methods=("pca", "tsne", "umap")
) -> None:
    """Stores an audited metric's cached embeddings on every slice, computes 2-D
    visualisations (UMAP only when umap-learn is installed) and a similarity index over all
    slices, so the App's embeddings panel and "sort by similarity" work.

    ``embedded`` is the pre-resized table the audit embedded (at the metric's input size: its
    image bytes are the cache keys) and ``cache_id`` the metric's id in the score cache
    (``summary.json``).
    """
    import fiftyone.brain as fob

    from .audit import TableImages
    from .score_cache import ScoreCache

    cache = cache or ScoreCache()
    images = TableImages(embedded, SLICES)
    key_of = {
        (triplet, name): images.keys[name][row]
        for row, triplet in enumerate(embedded["id"])
        for name in SLICES
    }
    flat = dataset.select_group_slices(list(SLICES))
    wanted = [
        key_of.get(pair) for pair in zip(flat.values("triplet_id"), flat.values("group.name"))
    ]
    if None in wanted or cache.missing_embeddings(cache_id, wanted):
        raise MetricError(
            f"{metric}: embeddings missing from the score cache; run "
            f"`nights audit --metric {metric}` on these triplets first"
        )
    vectors = cache.get_embeddings(cache_id, wanted)
    vectors = vectors.reshape(len(vectors), -1)
    field = f"{field_prefix(metric)}_embedding"
    flat.set_values(field, [vector.tolist() for vector in vectors])
    # A rerun (a new audit of the same dataset) replaces the runs of the last one.
    ours = {f"{field_prefix(metric)}_{run}" for run in (*methods, "similarity")}
    for key in ours & set(dataset.list_brain_runs()):
        dataset.delete_brain_run(key)
    for method in methods:
        if method == "umap":
            try:
                import umap  # noqa: F401
            except ImportError:
                continue
        options = {"pca_dims": None} if method == "tsne" and vectors.shape[1] < 50 else {}
        fob.compute_visualization(
            flat,
            embeddings=field,
            method=method,
            brain_key=f"{field_prefix(metric)}_{method}",
            **options,
        )
    fob.compute_similarity(
        flat, embeddings=field, backend="sklearn", brain_key=f"{field_prefix(metric)}_similarity"
    )
