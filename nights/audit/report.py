"""What an audit writes: the per-triplet Parquet, the summary JSON, the ranked label-noise
candidates, a single-file HTML report (plots and thumbnails inline, opens offline) and, when
asked, the leaderboard (Markdown and CSV, and a section of the report)."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from .._files import atomic_path, write_atomic
from ..images import open_rgb
from ..schema import IMAGE_COLUMNS
from .leaderboard import Leaderboard
from .stats import agreement_table


def figure_png(figure) -> str:
    """A matplotlib figure as base64 PNG, for an ``<img src="data:image/png;base64,...">``."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def _plots(audit: pd.DataFrame) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = []
    figure, axis = plt.subplots(figsize=(6, 3.5))
    for metric, part in audit.groupby("metric", sort=False):
        by_votes = part.groupby("votes")["two_afc"].mean()
        axis.plot(by_votes.index, by_votes.values, marker="o", label=metric)
    axis.set(xlabel="votes", ylabel="2AFC score", title="Agreement vs. number of votes")
    axis.legend(fontsize=7)
    plots.append(("Agreement vs. vote count", figure_png(figure)))
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(6, 3.5))
    for metric, part in audit.groupby("metric", sort=False):
        signed = np.where(part["agree"], 1, -1) * part["normalized_margin"]
        axis.hist(signed, bins=30, alpha=0.5, label=metric)
    axis.axvline(0, color="black", linewidth=0.8)
    axis.set(
        xlabel="margin / std (negative: disagrees with the humans)",
        ylabel="triplets",
        title="Margin histogram",
    )
    axis.legend(fontsize=7)
    plots.append(("Margin histogram", figure_png(figure)))
    plt.close(figure)

    prompts = audit.groupby(["prompt", "metric"])["two_afc"].mean().unstack("metric")
    figure, axis = plt.subplots(figsize=(7, 0.3 * len(prompts) + 1.5))
    prompts.plot.barh(ax=axis, legend=True)
    axis.set(xlabel="2AFC score", ylabel="", title="By category")
    axis.legend(fontsize=7)
    plots.append(("Per category", figure_png(figure)))
    plt.close(figure)
    return plots


def _thumbnail(storage: dict | list, size: int = 160) -> str:
    image = (
        Image.fromarray(np.asarray(storage, dtype=np.uint8))  # raw pixels (images="pixels")
        if isinstance(storage, list)
        else open_rgb(storage["bytes"] or storage["path"])
    )
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return base64.b64encode(buffer.getvalue()).decode()


def html_table(frame: pd.DataFrame) -> str:
    """A DataFrame as an escaped HTML table (numbers to 3 decimals), in the reports' style."""
    return frame.to_html(
        index=False, float_format=lambda v: f"{v:.3f}", escape=True, border=0, classes="data"
    )


def _leaderboard_section(leaderboard: Leaderboard) -> str:
    pairs = leaderboard.pair_table()
    title = f"Paired bootstrap ({leaderboard.rounds:,} rounds, seed {leaderboard.seed})"
    return (
        "<h2>Leaderboard</h2>"
        + html_table(leaderboard.metric_table())
        + (
            "<p>Paired bootstrap: one metric, no pair to compare.</p>"
            if pairs.empty  # a header with no rows reads as a table that lost its rows
            else f"<h3>{title}</h3>" + html_table(pairs)
        )
    )


def _fidelity_section(summary: dict) -> list[str]:
    """A table per metric that is not fp32 on torch: its fidelity against fp32."""
    parts = []
    for metric, entry in summary["metrics"].items():
        if "fidelity" in entry:
            rows = pd.DataFrame(
                [{"triplets": name, **report} for name, report in entry["fidelity"].items()]
            ).drop(columns="precision")
            parts.append(
                f"<h2>{html.escape(metric)} at {html.escape(entry['precision'])} on "
                f"{html.escape(entry['backend'])}: fidelity against fp32</h2>" + html_table(rows)
            )
    return parts


def write_report(
    path: Path,
    audit: pd.DataFrame,
    summary: dict,
    table,
    top: int = 24,
    leaderboard: Leaderboard | None = None,
) -> None:
    """A single HTML file (images inline) that opens offline."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>NIGHTS audit</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}"
        "table.data{border-collapse:collapse;font-size:13px}"
        "table.data td,table.data th{padding:3px 8px;border-bottom:1px solid #ddd}"
        ".triplet{display:inline-block;margin:8px;padding:6px;border:1px solid #ccc;"
        "font-size:12px;width:500px}.triplet img{width:160px;height:160px}</style>",
        "</head><body><h1>NIGHTS agreement audit</h1>",
        f"<pre>{html.escape(agreement_table(summary))}</pre>",
    ]
    if leaderboard is not None:
        parts.append(_leaderboard_section(leaderboard))
    parts.extend(_fidelity_section(summary))
    if "two_afc" not in audit:
        parts.append("<p>The table has no votes: only distances were computed.</p>")
    else:
        for metric, entry in summary["metrics"].items():
            parts.append(f"<h2>{html.escape(metric)}</h2>")
            for grouping in ("split", "is_imagenet", "votes"):
                rows = pd.DataFrame(
                    [
                        {
                            grouping: key,
                            **{k: v for k, v in value.items() if k != "ci95"},
                            "ci95": "[{:.3f}, {:.3f}]".format(*value["ci95"]),
                        }
                        for key, value in entry[f"by_{grouping}"].items()
                    ]
                )
                parts.append(f"<h3>by {grouping}</h3>" + html_table(rows))
        for title, png in _plots(audit):
            parts.append(f"<h2>{html.escape(title)}</h2><img src='data:image/png;base64,{png}'>")
        parts.append(f"<h2>Top {top} confident disagreements</h2>")
        flagged = audit[~audit["agree"]].sort_values("normalized_margin", ascending=False)
        rows_by_id = {identifier: index for index, identifier in enumerate(table["id"])}
        images = table.select_columns(list(IMAGE_COLUMNS)).with_format("arrow")
        for _, row in flagged.head(top).iterrows():
            storage = images[rows_by_id[row["id"]] : rows_by_id[row["id"]] + 1].to_pylist()[0]
            pictures = "".join(
                f"<img title='{c}' src='data:image/jpeg;base64,{_thumbnail(storage[c])}'>"
                for c in IMAGE_COLUMNS
            )
            parts.append(
                f"<div class='triplet'>{pictures}<br>id {int(row['id'])} · "
                f"{html.escape(str(row['prompt']))} · {html.escape(row['metric'])}<br>"
                f"humans: {row['human_choice']} ({int(row['votes'])} votes, right_vote "
                f"{row['right_vote']:.2f}) · model: {row['model_choice']} "
                f"(margin {row['normalized_margin']:.2f} sd)"
                f"{' · <b>label-noise candidate</b>' if row['label_noise_candidate'] else ''}"
                "</div>"
            )
    parts.append("</body></html>")
    write_atomic(path, "\n".join(parts))


def write_outputs(
    out: Path,
    audit: pd.DataFrame,
    summary: dict,
    table,
    *,
    report: bool = True,
    leaderboard: Leaderboard | None = None,
) -> dict[str, Path]:
    """Writes ``audit.parquet`` (per triplet and metric), ``summary.json``,
    ``label_noise_candidates.csv`` (ranked; when the table has votes), with ``report``
    ``report.html``, and with a ``leaderboard`` ``leaderboard.md``, ``leaderboard.csv`` (one
    row per metric) and ``leaderboard_pairs.csv`` (one per pair); returns the paths written,
    by kind."""
    paths = {"parquet": out / "audit.parquet", "json": out / "summary.json"}
    with atomic_path(paths["parquet"]) as temporary:
        audit.to_parquet(temporary, index=False)
    write_atomic(paths["json"], json.dumps(summary, indent=2, default=float))
    if leaderboard is not None:
        paths["leaderboard"] = out / "leaderboard.md"
        paths["leaderboard_csv"] = out / "leaderboard.csv"
        paths["leaderboard_pairs_csv"] = out / "leaderboard_pairs.csv"
        write_atomic(paths["leaderboard"], leaderboard.to_markdown() + "\n")
        write_atomic(paths["leaderboard_csv"], leaderboard.metrics.to_csv(index=False))
        write_atomic(paths["leaderboard_pairs_csv"], leaderboard.pairs.to_csv(index=False))
    if report:
        paths["html"] = out / "report.html"
        write_report(paths["html"], audit, summary, table, leaderboard=leaderboard)
    if "label_noise_candidate" in audit:
        paths["candidates"] = out / "label_noise_candidates.csv"
        flagged = audit[audit["label_noise_candidate"]].sort_values(
            "normalized_margin", ascending=False
        )
        write_atomic(paths["candidates"], flagged.to_csv(index=False))
    return paths
