"""A trained run, shared: one merged safetensors file, and a Hugging Face Hub model repository.

:func:`export_merged` loads the run's best checkpoint as ``dreamsim()`` does (LoRA merged into
the qkv weights, or the MLP head) and writes it with ``dreamsim.export(..., format=
"safetensors")``: one file that ``dreamsim(cache_dir="file.safetensors", dreamsim_type=...)``
loads without PEFT or the release's several files. :func:`push_run` uploads that file, or the
release-layout checkpoint (which upstream's ``dreamsim`` package loads too), with a model card
(:func:`model_card`: how to load it, the validation and test 2AFC with their intervals, the
config, where the data came from).

Example::

    >>> from nights.train import export_merged
    >>> export_merged("nights-train/run")                                # doctest: +SKIP
    PosixPath('nights-train/run/export/dreamsim_ensemble_merged.safetensors')
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import yaml

from ..errors import TrainError
from .engine import CONFIG_FILE, TrainResult, read_result


def export_merged(run: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Writes the best checkpoint of ``run`` as one merged safetensors file.

    Args:
        run: a finished run folder.
        out: the file (default ``RUN/export/dreamsim_{variant}_merged.safetensors``).

    Returns:
        The file's path.

    Raises:
        TrainError: ``run`` holds no finished run.
    """
    from dreamsim import dreamsim, export

    result = read_result(run)
    variant = _variant_name(result)
    model, _ = dreamsim(
        pretrained=True,
        cache_dir=result.best,
        dreamsim_type=result.config.variant,
        use_patch_model=result.config.use_patch_model,
        device="cpu",
        download=False,
    )
    target = Path(out) if out else result.run / "export" / f"dreamsim_{variant}_merged.safetensors"
    return export(model, target, format="safetensors")


def _variant_name(result: TrainResult) -> str:
    config = result.config
    return f"{config.variant}_patch" if config.use_patch_model else config.variant


def _interval(entry: dict | None) -> str:
    if not entry:
        return "-"
    low, high = entry["ci95"]
    return f"{entry['two_afc']:.3f} [{low:.3f}, {high:.3f}]"


def model_card(result: TrainResult, repo_id: str, merged: str | None) -> str:
    """The ``README.md`` of a pushed run: YAML metadata, how to load it, the validation 2AFC of
    every epoch and the test 2AFC with their bootstrap 95% intervals, the training config and
    the data's provenance.

    Args:
        result: the run (:func:`~nights.train.read_result`).
        repo_id: ``OWNER/NAME`` for the loading example.
        merged: the merged file's name in the repository, or None for the release layout.
    """
    variant = _variant_name(result)
    config, run = result.config, result.run
    metadata = {
        "library_name": "dreamsim",
        "tags": ["dreamsim", "perceptual-similarity", "nights", "image-similarity"],
        "license": "mit",
    }
    if merged:
        loading = (
            "```python\nfrom huggingface_hub import hf_hub_download\n"
            "from dreamsim import dreamsim\n\n"
            f'path = hf_hub_download("{repo_id}", "{merged}")\n'
            f'model, preprocess = dreamsim(cache_dir=path, dreamsim_type="{config.variant}")\n'
            "distance = model(preprocess(image_a), preprocess(image_b))\n```\n\n"
            "One safetensors file: LoRA merged into the weights (the `dreamsim` package of "
            "`nights`)."
        )
    else:
        loading = (
            "```python\nfrom huggingface_hub import snapshot_download\n"
            "from dreamsim import dreamsim\n\n"
            f'folder = snapshot_download("{repo_id}")\n'
            f"model, preprocess = dreamsim(pretrained=True, cache_dir=folder, "
            f'dreamsim_type="{config.variant}")\n```\n\n'
            "The release layout (adapter folder beside the untuned backbone files): the "
            "`dreamsim` package of `nights` and upstream's `dreamsim` package load it."
        )
    rows = ["| epoch | train loss | train 2AFC | validation 2AFC [95% CI] |", "|---|---|---|---|"]
    for entry in result.epochs:
        loss = entry.get("train_loss")
        agreement = entry.get("train_2afc")
        rows.append(
            f"| {entry['epoch']}{' (best)' if entry['epoch'] == result.best_epoch else ''} | "
            f"{'-' if loss is None else f'{loss:.4f}'} | "
            f"{'-' if agreement is None else f'{agreement:.3f}'} | {_interval(entry.get('val'))} |"
        )
    test = result.test
    test_line = (
        f"Test 2AFC of the best epoch: **{_interval(test)}** ({test['triplets']} triplets)."
        if test
        else "No test split was evaluated."
    )
    data = json.loads((run / "result.json").read_text(encoding="utf-8")).get("data", {})
    provenance = _provenances(config)
    parts = [
        "---\n" + yaml.safe_dump(metadata, sort_keys=False) + "---",
        f"# DreamSim {variant}, fine-tuned ({config.method})",
        f"Trained with `nights train` from {'the tuned' if config.pretrained else 'the untuned'} "
        f"{config.variant} backbones: hinge loss (margin {config.margin}, {config.labels} "
        f"labels), Adam lr {config.lr}, batch {config.batch_size}, {config.epochs} epochs.",
        "## Loading\n\n" + loading,
        "## Agreement with the human votes (2AFC)\n\n"
        "Computed as `nights audit` computes it (soft targets, ties count half; bootstrap 95% "
        "intervals). Epoch 0 is the starting model.\n\n" + "\n".join(rows) + f"\n\n{test_line}",
        "## Data\n\n" + "\n".join(f"- {name}: {text}" for name, text in data.items()),
    ]
    if provenance:
        parts.append(
            "### Provenance of the splits\n\n```json\n" + json.dumps(provenance, indent=2) + "\n```"
        )
    parts.append(
        "## Training config\n\n```yaml\n"
        + (run / CONFIG_FILE).read_text(encoding="utf-8").strip()
        + "\n```"
    )
    return "\n\n".join(parts) + "\n"


def _provenances(config) -> dict:
    """``provenance.json`` of each section's data folder that has one (splits written by
    nights: source CSV, filters, counts)."""
    from ..table import resolve_source

    found = {}
    for section in ("train", "val", "test"):
        rows = getattr(config, section)
        if not isinstance(rows, dict) and getattr(rows, "root", None):
            try:
                folder = resolve_source(rows.root).csv_path.parent
            except Exception:  # the data moved since: the card says what the run recorded
                continue
            path = folder / "provenance.json"
            if path.is_file():
                found[section] = json.loads(path.read_text(encoding="utf-8"))
    return found


def push_run(
    run: str | os.PathLike,
    repo_id: str,
    *,
    merged: str | os.PathLike | None = None,
    private: bool = False,
    token: str | None = None,
):
    """Uploads a run to the model repository ``repo_id`` (created when missing) with its card.

    Args:
        run: a finished run folder.
        repo_id: ``OWNER/NAME``.
        merged: a merged file from :func:`export_merged` to upload; None uploads the best
            checkpoint in the release layout.
        private: make a new repository private.
        token: default ``HF_TOKEN``, else the token of ``hf auth login``.

    Returns:
        ``nights.publish.PushResult`` (the repository's URL and the commit).

    Raises:
        NightsError: no token, a refused token, the Hub's refusal, in one line each.
    """
    from ..publish import PushResult
    from ..publish._push import hub_error, hub_session

    result = read_result(run)
    api, _ = hub_session(repo_id, token)
    with tempfile.TemporaryDirectory(prefix="nights-push-") as scratch:
        staging = Path(scratch)
        if merged is not None:
            merged = Path(merged)
            if not merged.is_file():
                raise TrainError(f"{merged}: no such file; write it with `nights train export`")
            _place(merged, staging / merged.name)
        else:
            for path in result.best.rglob("*"):
                if path.is_file():
                    _place(path, staging / path.relative_to(result.best))
        for name in (CONFIG_FILE, "result.json"):
            shutil.copyfile(result.run / name, staging / f"training_{name}")
        card = model_card(result, repo_id, merged.name if merged is not None else None)
        (staging / "README.md").write_text(card, encoding="utf-8")
        try:
            api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
            commit = api.upload_folder(
                repo_id=repo_id,
                repo_type="model",
                folder_path=str(staging),
                commit_message=f"DreamSim {_variant_name(result)} trained with nights train",
            )
        except Exception as error:
            raise hub_error(api, f"uploading {result.run} to {repo_id}", error) from None
    return PushResult(f"{api.endpoint}/{repo_id}", getattr(commit, "oid", None))


def _place(source: Path, target: Path) -> None:
    """A hard link where the disk allows one (the base weights are large), else a copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
