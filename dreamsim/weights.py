"""Finding, fetching and checking the released checkpoint files; reading their state dicts.

``cache_dir`` (default ``$DREAMSIM_HOME``, else ``~/.cache/dreamsim``) may hold the extracted
files of a variant, or its official zip (``dreamsim_<variant>_checkpoint.zip``), which is
extracted on first use; ``cache_dir`` may also be the zip itself. The zip is downloaded
(resumable, with a progress bar) only when ``pretrained=True`` and nothing is there. A
``dreamsim_manifest.json`` records the sha256 of every file when it is first used and is checked
at each load, so a file damaged later is caught. With the files present no network call is made.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import torch

from .errors import CheckpointError
from .variants import Backbone, Variant

logger = logging.getLogger(__name__)

MANIFEST = "dreamsim_manifest.json"
DINO_HUB_FILE = "dino_vitbase16_pretrain.pth"  # torch.hub's DINO backbone (upstream's source)


def default_cache_dir() -> Path:
    return Path(os.environ.get("DREAMSIM_HOME") or Path.home() / ".cache" / "dreamsim")


def _zip_name(variant: Variant) -> str:
    return f"dreamsim_{variant.name}_checkpoint.zip"


def _complete(folder: Path, names: list[str]) -> bool:
    return all((folder / name).exists() for name in names)


def _extract(archive: Path, folder: Path) -> None:
    """Extracts next to the target, then moves each top-level entry into place."""
    partial = folder / f".extract-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        with zipfile.ZipFile(archive) as opened:
            bad = opened.testzip()
            if bad:
                raise CheckpointError(
                    f"{archive}: member {bad} is corrupt; delete the zip and download it again"
                )
            opened.extractall(partial)
        for entry in partial.iterdir():
            target = folder / entry.name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(entry, target)
    except zipfile.BadZipFile as error:
        raise CheckpointError(
            f"{archive}: not a readable zip ({error}); delete it and download it again"
        ) from None
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _download(url: str, target: Path, progress: bool | None) -> None:
    """Fetches ``url`` to ``target``, resuming a ``.part`` file with an HTTP Range request."""
    from tqdm.auto import tqdm

    part = target.with_name(target.name + ".part")
    start = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            if start and response.status != 206:
                start = 0  # the server ignored Range: start again
            total = int(response.headers.get("Content-Length") or 0) + start
            with (
                open(part, "ab" if start else "wb") as out,
                tqdm(
                    total=total or None,
                    initial=start,
                    unit="B",
                    unit_scale=True,
                    desc=target.name,
                    disable=None if progress is None else not progress,
                ) as bar,
            ):
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    bar.update(len(block))
    except (urllib.error.URLError, OSError) as error:
        raise CheckpointError(
            f"could not download {url} ({error}); run again to resume, or "
            f"download it by hand into {target.parent}"
        ) from None
    if total and part.stat().st_size != total:
        raise CheckpointError(
            f"{url}: got {part.stat().st_size} of {total} bytes; run again to resume"
        )
    os.replace(part, target)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        with open(file, "rb") as handle:
            for block in iter(lambda handle=handle: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _verify_manifest(folder: Path, names: list[str], url: str) -> None:
    """Records sha256 of files seen for the first time; checks the others."""
    manifest_path = folder / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    changed = False
    for name in names:
        digest = _sha256(folder / name)
        if name not in manifest:
            manifest[name] = digest
            changed = True
        elif manifest[name] != digest:
            raise CheckpointError(
                f"{folder / name} differs from the checksum recorded when it was first used "
                f"({MANIFEST}); it is damaged or was replaced. Delete it and get it again from "
                f"{url} (or delete {manifest_path} if you replaced it on purpose)"
            )
    if changed:
        temporary = manifest_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(manifest, indent=1, sort_keys=True))
        os.replace(temporary, manifest_path)


def checkpoint_folder(
    variant: Variant,
    cache_dir: str | os.PathLike | None,
    *,
    download: bool,
    verify: bool = True,
    progress: bool | None = None,
    with_adapter: bool = True,
) -> Path:
    """The folder holding ``variant``'s files, extracted or downloaded when needed.

    ``with_adapter=False`` needs the backbone files only (the untuned model).
    """
    names = [n for n in variant.files if with_adapter or n != variant.adapter]
    given = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if given.suffix == ".zip" and given.is_file():
        folder = given.parent / given.stem
        folder.mkdir(parents=True, exist_ok=True)
        if not _complete(folder, names):
            _extract(given, folder)
    else:
        folder = given
        archive = folder / _zip_name(variant)
        if not _complete(folder, names) and not archive.exists() and download:
            folder.mkdir(parents=True, exist_ok=True)
            logger.info("downloading %s", variant.url)
            _download(variant.url, archive, progress)
        if not _complete(folder, names) and archive.exists():
            _extract(archive, folder)
    missing = [name for name in names if not (folder / name).exists()]
    if missing:
        raise CheckpointError(
            f"DreamSim {variant.name}: missing {', '.join(missing)} in {folder}. Download "
            f"with `python -m dreamsim download {variant.name} --cache-dir {folder}`, or get "
            f"{variant.url} and put the zip (or its extracted files) there"
        )
    if verify:
        _verify_manifest(folder, names, variant.url)
    return folder


def _torch_load(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for a damaged file
        raise CheckpointError(f"{path}: cannot be read as a PyTorch checkpoint ({error})") from None


def _strip(state: dict, prefix: str) -> dict:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def backbone_state(folder: Path, backbone: Backbone) -> tuple[dict, torch.Tensor | None]:
    """The ViT state dict (DINO-style keys) and the projection (CLIP-like backbones only)."""
    path = folder / backbone.checkpoint
    if backbone.kind == "dino":
        # The release zip's file is a DINO training checkpoint; upstream's backbone is the
        # torch.hub release, which is DINO's teacher. Never the student.
        for hub in (folder / "checkpoints" / DINO_HUB_FILE, folder / DINO_HUB_FILE):
            if hub.exists():
                return _torch_load(hub), None
        saved = _torch_load(path)
        teacher = _strip(saved.get("teacher", {}), "backbone.") if isinstance(saved, dict) else {}
        if not teacher:
            raise CheckpointError(
                f"DINO backbone not found: no {DINO_HUB_FILE} in {folder / 'checkpoints'} or "
                f"{folder}, and {path} has no 'teacher' network. Put DINO's released "
                f"{DINO_HUB_FILE} in {folder / 'checkpoints'}"
            )
        return teacher, None
    saved = _torch_load(path)
    if backbone.kind in ("clip", "open_clip"):
        state = dict(saved.get("state_dict", saved))
        if "proj" not in state:
            raise CheckpointError(f"{path}: no 'proj' tensor (not a CLIP-as-DINO checkpoint)")
        return state, state.pop("proj")
    if backbone.kind == "synclr":
        return _strip(saved.get("model", saved), "module.visual."), None
    return dict(saved), None  # dinov2: a plain state dict


def weights_id(folder: Path, names: list[str]) -> str:
    """A short content fingerprint of the files a model was built from (for score caches):
    their recorded sha256 when the manifest has them, else their sizes."""
    manifest_path = folder / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    entries = {name: manifest.get(name) or _size(folder / name) for name in names}
    return hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()[:16]


def _size(path: Path) -> int:
    return (
        sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        if path.is_dir()
        else (path.stat().st_size)
    )
