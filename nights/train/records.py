"""What a run writes about itself: the step log, the epoch table and a one-file HTML report.

``log.csv`` has a row per optimizer step (``epoch, step, epoch_step, triplets, loss, two_afc,
lr, micro_batch, seconds``); ``epochs.csv`` a row per epoch (``epoch, train_loss, train_2afc,
val_2afc, val_low, val_high, val_triplets, seconds``; epoch 0 is the starting model);
``report.html`` the curves of loss and 2AFC, the epoch table, the test result and the config,
with the plots inline: it opens offline, like the audit's report.
"""

from __future__ import annotations

import csv
import html
import io
import json
from pathlib import Path

import pandas as pd

from .._files import write_atomic

STEP_COLUMNS = (
    "epoch",
    "step",
    "epoch_step",
    "triplets",
    "loss",
    "two_afc",
    "lr",
    "micro_batch",
    "seconds",
)
EPOCH_COLUMNS = (
    "epoch",
    "train_loss",
    "train_2afc",
    "val_2afc",
    "val_low",
    "val_high",
    "val_triplets",
    "seconds",
)


class StepLog:
    """``log.csv``, appended a row per step; on resume, rows after the resumed step go."""

    def __init__(self, path: Path, keep_until_step: int):
        self.path = path
        kept = []
        if keep_until_step and path.is_file():
            with open(path, newline="", encoding="utf-8") as handle:
                kept = [
                    row for row in csv.DictReader(handle) if int(row["step"]) <= keep_until_step
                ]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, STEP_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(kept)
        write_atomic(path, buffer.getvalue())
        self._handle = open(path, "a", newline="", encoding="utf-8")  # noqa: SIM115
        self._writer = csv.DictWriter(self._handle, STEP_COLUMNS, lineterminator="\n")

    def write(self, row: dict) -> None:
        self._writer.writerow(row)
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


def epoch_rows(history: list[dict]) -> list[dict]:
    """The ``epochs.csv`` rows of a run's history."""
    rows = []
    for entry in history:
        val = entry.get("val") or {}
        low, high = val.get("ci95", (None, None))
        rows.append(
            {
                "epoch": entry["epoch"],
                "train_loss": entry.get("train_loss"),
                "train_2afc": entry.get("train_2afc"),
                "val_2afc": val.get("two_afc"),
                "val_low": low,
                "val_high": high,
                "val_triplets": val.get("triplets"),
                "seconds": entry.get("seconds"),
            }
        )
    return rows


def write_epochs(path: Path, history: list[dict]) -> None:
    write_atomic(path, pd.DataFrame(epoch_rows(history), columns=EPOCH_COLUMNS).to_csv(index=False))


def _plots(steps: pd.DataFrame, epochs: pd.DataFrame) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..audit.report import figure_png

    plots = []
    figure, axis = plt.subplots(figsize=(7, 3.5))
    if len(steps):
        axis.plot(steps["step"], steps["loss"], color="#bbb", linewidth=0.8, label="per step")
        window = max(1, len(steps) // 30)
        smooth = steps["loss"].rolling(window, min_periods=1).mean()
        axis.plot(steps["step"], smooth, color="#1f77b4", label=f"mean of {window} steps")
    axis.set(xlabel="optimizer step", ylabel="hinge loss", title="Training loss")
    if len(steps):
        axis.legend(fontsize=7)
    plots.append(("Loss", figure_png(figure)))
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(7, 3.5))
    trained = epochs.dropna(subset=["train_2afc"])
    axis.plot(trained["epoch"], trained["train_2afc"], marker="o", label="train (running)")
    validated = epochs.dropna(subset=["val_2afc"])
    if len(validated):
        axis.errorbar(
            validated["epoch"],
            validated["val_2afc"],
            yerr=[
                validated["val_2afc"] - validated["val_low"],
                validated["val_high"] - validated["val_2afc"],
            ],
            marker="s",
            capsize=3,
            label="validation (95% CI)",
        )
    axis.set(xlabel="epoch (0: the starting model)", ylabel="2AFC score", title="Agreement")
    if len(trained) or len(validated):
        axis.legend(fontsize=7)
    plots.append(("2AFC", figure_png(figure)))
    plt.close(figure)
    return plots


def write_report(
    path: Path,
    config: dict,
    history: list[dict],
    steps_csv: Path,
    data: dict[str, str],
    test: dict | None,
    best_epoch: int | None,
) -> None:
    """``report.html``: one file, plots inline, no link outside it."""
    from ..audit.report import html_table

    steps = pd.read_csv(steps_csv) if steps_csv.is_file() else pd.DataFrame(columns=STEP_COLUMNS)
    epochs = pd.DataFrame(epoch_rows(history), columns=EPOCH_COLUMNS)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>DreamSim training</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1000px}"
        "table.data{border-collapse:collapse;font-size:13px}"
        "table.data td,table.data th{padding:3px 8px;border-bottom:1px solid #ddd}</style>",
        "</head><body>",
        f"<h1>DreamSim {html.escape(str(config.get('variant')))}, "
        f"{html.escape(str(config.get('method')))}: {html.escape(str(config.get('out')))}</h1>",
    ]
    if test:
        low, high = test["ci95"]
        parts.append(
            f"<p><b>Test 2AFC {test['two_afc']:.3f}</b> (95% CI [{low:.3f}, {high:.3f}], "
            f"{test['triplets']} triplets) with the best epoch ({best_epoch}).</p>"
        )
    elif best_epoch is not None:
        parts.append(f"<p>Best epoch so far: {best_epoch}.</p>")
    for title, png in _plots(steps, epochs):
        parts.append(f"<h2>{html.escape(title)}</h2><img src='data:image/png;base64,{png}'>")
    parts.append("<h2>Epochs</h2>" + html_table(epochs))
    parts.append(
        "<h2>Data</h2><ul>"
        + "".join(
            f"<li>{html.escape(name)}: {html.escape(text)}</li>" for name, text in data.items()
        )
        + "</ul>"
    )
    parts.append(f"<h2>Config</h2><pre>{html.escape(json.dumps(config, indent=2))}</pre>")
    parts.append("</body></html>")
    write_atomic(path, "\n".join(parts))
