"""Backbone weights from the Hugging Face Hub, through ``huggingface_hub`` and its cache.

A file already in the cache is used without asking the Hub (no network once cached, as for
the release files); otherwise it is downloaded, unless ``download=False`` or
``HF_HUB_OFFLINE=1`` (read at each call). ``HF_HUB_CACHE`` / ``HF_HOME`` and ``HF_ENDPOINT``
work as in ``huggingface_hub``; a registry entry's ``revision`` pins a branch, tag or commit.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import CheckpointError
from .variants import HubWeights


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def hub_file(
    weights: HubWeights, *, download: bool = True, cache_dir: str | os.PathLike | None = None
) -> Path:
    """The local path of ``weights``' file, from the Hugging Face cache or downloaded into it.

    Args:
        weights: the repo, file and revision (see :class:`~dreamsim.variants.HubWeights`).
        download: False (or ``HF_HUB_OFFLINE=1``): the cache only.
        cache_dir: the Hugging Face cache (default ``HF_HUB_CACHE``, else
            ``~/.cache/huggingface/hub``).

    Raises:
        CheckpointError: one line naming the repo, the file and why it could not be had.
    """
    from huggingface_hub import hf_hub_download

    where = cache_dir or os.environ.get("HF_HUB_CACHE") or None
    request = {
        "repo_id": weights.repo,
        "filename": weights.filename,
        "revision": weights.revision,
        "cache_dir": where,
    }
    try:
        return Path(hf_hub_download(**request, local_files_only=True))
    except Exception:  # not cached (huggingface_hub's error classes differ across versions)
        if not download or offline():
            why = "HF_HUB_OFFLINE=1" if offline() else "download=False"
            raise CheckpointError(
                f"{weights.repo}/{weights.filename} (revision {weights.revision or 'main'}) is "
                f"not in the Hugging Face cache ({why})"
            ) from None
    try:
        return Path(hf_hub_download(**request))
    except Exception as error:  # network, HTTP and file errors of huggingface_hub alike
        raise CheckpointError(
            f"could not get {weights.repo}/{weights.filename} (revision "
            f"{weights.revision or 'main'}) from the Hugging Face Hub ({_first_line(error)})"
        ) from None


def blob_digest(path: Path) -> str | None:
    """The sha256 the Hub gave the file (its blob's name in the cache), when it is one."""
    name = Path(os.path.realpath(path)).name
    return name if len(name) == 64 and all(c in "0123456789abcdef" for c in name) else None
