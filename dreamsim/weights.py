"""Finding, fetching and checking the weight files; reading the backbones' state dicts.

``cache_dir`` (default ``$DREAMSIM_HOME``, else ``~/.cache/dreamsim``) may hold the extracted
files of a variant, or its official zip (``dreamsim_<variant>_checkpoint.zip``), which is
extracted on first use; ``cache_dir`` may also be the zip itself. The zip is downloaded
(resumable, with a progress bar, one process at a time under a file lock) only when the tuned
weights are asked for and nothing is there. Untuned backbones missing from ``cache_dir`` come
from the Hugging Face Hub when the registry names a repo (:mod:`dreamsim.hub`). A
``dreamsim_manifest.json`` records the sha256 of every file of ``cache_dir`` when it is first
used and is checked at each load, so a file damaged later is caught. With the files present
no network call is made.
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
from dataclasses import dataclass
from pathlib import Path

import torch

from .backbones import KEY_MAPS, release_to_vit
from .errors import CheckpointError
from .hub import blob_digest, hub_file
from .variants import Backbone, Variant

logger = logging.getLogger(__name__)

MANIFEST = "dreamsim_manifest.json"
DINO_HUB_FILE = "dino_vitbase16_pretrain.pth"  # torch.hub's DINO backbone (upstream's source)


@dataclass(frozen=True)
class BaseSource:
    """Where a backbone's untuned weights are: the file, how to read it, its saved name.

    ``layout`` is ``release`` (upstream's files) or a Hub layout (``timm``, ``open_clip``);
    ``name`` is the file's name in a saved model's folder, ``companions`` the files saved
    beside it (DINO's training checkpoint, which upstream's loader also opens); ``digest``
    identifies the content (sha256 when known).
    """

    path: Path
    layout: str
    name: str
    companions: tuple[tuple[Path, str], ...] = ()
    digest: str | None = None


@dataclass(frozen=True)
class Located:
    """A variant's files: the folder, each backbone's source, the tuned weights if asked."""

    folder: Path
    bases: tuple[BaseSource, ...]
    tuning: Path | None
    weights_id: str


def default_cache_dir() -> Path:
    return Path(os.environ.get("DREAMSIM_HOME") or Path.home() / ".cache" / "dreamsim")


def _zip_name(variant: Variant) -> str:
    return f"dreamsim_{variant.name}_checkpoint.zip"


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


def sha256_of(path: Path) -> str:
    """sha256 of a file, or of a folder's files in name order."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        with open(file, "rb") as handle:
            for block in iter(lambda handle=handle: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    return json.loads(path.read_text()) if path.exists() else {}


def atomic_write(target: Path, write) -> None:
    """``write(temporary)`` beside ``target``, then a rename over it: a reader never sees half
    a file, and an interrupted write leaves the old one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        write(temporary)
        os.replace(temporary, target)
    finally:
        if temporary.exists():
            temporary.unlink()


def _write_manifest(folder: Path, manifest: dict) -> None:
    text = json.dumps(manifest, indent=1, sort_keys=True)
    atomic_write(folder / MANIFEST, lambda path: path.write_text(text))


def _verify_manifest(folder: Path, names: list[str], url: str | None) -> None:
    """Records sha256 of files seen for the first time; checks the others."""
    manifest = _read_manifest(folder)
    changed = False
    for name in names:
        digest = sha256_of(folder / name)
        if name not in manifest:
            manifest[name] = digest
            changed = True
        elif manifest[name] != digest:
            source = f"get it again from {url}" if url else "write it again"
            raise CheckpointError(
                f"{folder / name} differs from the checksum recorded when it was first used "
                f"({MANIFEST}); it is damaged or was replaced. Delete it and {source} (or "
                f"delete {folder / MANIFEST} if you replaced it on purpose)"
            )
    if changed:
        _write_manifest(folder, manifest)


def record_manifest(folder: Path, names: list[str]) -> None:
    """Records the sha256 of files just written on purpose (replacing older entries)."""
    manifest = _read_manifest(folder)
    manifest.update({name: sha256_of(folder / name) for name in names})
    _write_manifest(folder, manifest)


def _check_pin(archive: Path, variant: Variant) -> None:
    if variant.sha256 is None:
        return
    digest = sha256_of(archive)
    if digest != variant.sha256:
        archive.unlink()
        raise CheckpointError(
            f"{archive}: sha256 {digest} is not the published {variant.sha256} "
            f"(dreamsim/variants.py); the file was deleted: download it again"
        )


def _tuning(folder: Path, variant: Variant) -> Path | None:
    """The tuned weights in ``folder``: the LoRA adapter folder, else an MLP head."""
    for name in (variant.adapter, variant.mlp_head):
        if (folder / name).exists():
            return folder / name
    return None


def _release_present(folder: Path, backbone: Backbone) -> bool:
    if backbone.checkpoint is None:
        return False
    return (folder / backbone.checkpoint).exists() or (
        backbone.kind == "dino" and (folder / "checkpoints" / DINO_HUB_FILE).exists()
    )


def _fetch_release(
    variant: Variant, folder: Path, archive: Path, progress: bool | None, done, download: bool
) -> None:
    """Extracts ``archive``, or downloads it first when allowed, unless ``done()``.

    One process at a time: the others wait on the lock, then find the files there (two
    ranks of a distributed job never write one ``.part``).
    """
    from filelock import FileLock

    if not archive.exists() and not (download and variant.url):
        return
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder / f".{_zip_name(variant)}.lock")):
        if done():
            return
        if not archive.exists():
            logger.info("downloading %s", variant.url)
            _download(variant.url, archive, progress)
        _check_pin(archive, variant)
        _extract(archive, folder)


def resolve_folder(variant: Variant, cache_dir: str | os.PathLike | None) -> tuple[Path, Path]:
    """``(folder, zip)``: ``cache_dir`` (default ``$DREAMSIM_HOME``) and the official zip's
    place in it; or, when ``cache_dir`` is a zip, the folder beside it named as the zip."""
    given = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if given.suffix == ".zip" and given.is_file():
        return given.parent / given.stem, given
    return given, given / _zip_name(variant)


def _missing_message(variant: Variant, folder: Path, names: list[str]) -> str:
    if variant.url is None:
        return (
            f"DreamSim {variant.name}: missing {', '.join(names)} in {folder}; "
            f"{variant.name} has no release: write them there (dreamsim.save_pretrained "
            f"saves a trained model so), or build the untuned model with pretrained=False"
        )
    return (
        f"DreamSim {variant.name}: missing {', '.join(names)} in {folder}. Download with "
        f"`python -m dreamsim download {variant.name} --cache-dir {folder}`, or get "
        f"{variant.url} and put the zip (or its extracted files) there"
    )


def locate_base(
    folder: Path,
    variant: Variant,
    backbone: Backbone,
    *,
    download: bool = True,
    hub_cache_dir: str | os.PathLike | None = None,
) -> BaseSource:
    """Where ``backbone``'s untuned weights are: the release file in ``folder``, else a saved
    copy of its Hub file there, else the Hugging Face cache (downloading when allowed)."""
    if _release_present(folder, backbone):
        path = folder / backbone.checkpoint
        if backbone.kind == "dino":
            # Upstream's backbone is torch.hub's release (DINO's teacher); the zip's training
            # checkpoint holds the teacher too, and the head upstream's loader reads.
            companions = ((path, backbone.checkpoint),) if path.exists() else ()
            for name in (f"checkpoints/{DINO_HUB_FILE}", DINO_HUB_FILE):
                if (folder / name).exists():
                    return BaseSource(folder / name, "release", name, companions)
        return BaseSource(path, "release", backbone.checkpoint)
    if backbone.hub is None and variant.url is None:
        raise CheckpointError(
            f"DreamSim {variant.name}: missing {backbone.checkpoint} in {folder}; "
            f"{backbone.name} has no release and no Hugging Face Hub repo: put the file there"
        )
    if backbone.hub is None:
        raise CheckpointError(_missing_message(variant, folder, [backbone.checkpoint]))
    copy = folder / backbone.hub_copy
    if copy.exists():
        return BaseSource(copy, backbone.hub.layout, backbone.hub_copy)
    try:
        path = hub_file(backbone.hub, download=download, cache_dir=hub_cache_dir)
    except CheckpointError as error:
        command = f"`python -m dreamsim download {variant.name}"
        fetch = (
            f"{command} --cache-dir {folder}` (the release, {variant.url}) or {command} --from-hub`"
            if variant.url
            else f"{command}`"
        )
        absent = f"no {backbone.checkpoint} in {folder}, and " if backbone.checkpoint else ""
        raise CheckpointError(
            f"DreamSim {variant.name}: untuned {backbone.name} weights not found: {absent}"
            f"{error}. Fetch them with {fetch} where the Hub is reachable"
        ) from None
    return BaseSource(
        path, backbone.hub.layout, backbone.hub_copy, digest=blob_digest(path) or str(path)
    )


def locate(
    variant: Variant,
    cache_dir: str | os.PathLike | None,
    *,
    tuned: bool,
    download: bool = True,
    verify: bool = True,
    progress: bool | None = None,
    hub_cache_dir: str | os.PathLike | None = None,
) -> Located:
    """Every file ``variant`` needs, extracted or downloaded when needed and allowed.

    ``tuned=False`` needs the untuned backbones only, and never downloads the release zip.
    """
    folder, archive = resolve_folder(variant, cache_dir)

    def complete() -> bool:
        has_tuning = not tuned or _tuning(folder, variant) is not None
        return has_tuning and all(
            _release_present(folder, b) or (folder / b.hub_copy).exists() or not b.checkpoint
            for b in variant.backbones
        )

    if not complete():
        # the zip is downloaded for the tuned weights only; missing untuned backbones come
        # from a zip already there, else from the Hub
        fetch = download and tuned and _tuning(folder, variant) is None
        _fetch_release(variant, folder, archive, progress, complete, fetch)
    tuning = _tuning(folder, variant) if tuned else None
    if tuned and tuning is None:
        raise CheckpointError(_missing_message(variant, folder, [variant.adapter]))
    bases = tuple(
        locate_base(folder, variant, b, download=download, hub_cache_dir=hub_cache_dir)
        for b in variant.backbones
    )
    local = [
        name
        for source in bases
        for path, name in ((source.path, source.name), *source.companions)
        if path.parent.resolve() in (folder.resolve(), (folder / "checkpoints").resolve())
    ]
    local = list(dict.fromkeys(local + ([tuning.name] if tuning else [])))
    if verify:
        _verify_manifest(folder, local, variant.url)
    manifest = _read_manifest(folder)
    entries = {name: manifest.get(name) or _size(folder / name) for name in local}
    entries.update({s.name: s.digest for s in bases if s.digest})
    weights_id = hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()[:16]
    return Located(folder, bases, tuning, weights_id)


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

    ``with_adapter=False`` needs the untuned backbones only.
    """
    return locate(
        variant,
        cache_dir,
        tuned=with_adapter,
        download=download,
        verify=verify,
        progress=progress,
    ).folder


def _torch_load(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for a damaged file
        raise CheckpointError(f"{path}: cannot be read as a PyTorch checkpoint ({error})") from None


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors, or one CheckpointError naming the file."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as error:  # safetensors raises its own and OS errors alike
        raise CheckpointError(f"{path}: not a readable safetensors file ({error})") from None


def read_source(source: BaseSource) -> dict:
    """The file's content as stored: a safetensors file's tensors, or a torch checkpoint as
    loaded (weights only)."""
    if source.path.suffix == ".safetensors":
        return read_tensors(source.path)
    return _torch_load(source.path)


def backbone_state(source: BaseSource, backbone: Backbone) -> tuple[dict, torch.Tensor | None]:
    """The ViT state dict (this package's keys) and the projection, through the key map."""
    content = read_source(source)
    where = str(source.path)
    if source.layout != "release":
        return KEY_MAPS[source.layout](content, where)
    if backbone.kind == "dino" and source.name == backbone.checkpoint and "teacher" not in content:
        folder = source.path.parent
        raise CheckpointError(
            f"DINO backbone not found: no {DINO_HUB_FILE} in {folder / 'checkpoints'} or "
            f"{folder}, and {source.path} has no 'teacher' network. Put DINO's released "
            f"{DINO_HUB_FILE} in {folder / 'checkpoints'}"
        )
    return release_to_vit(content, backbone.kind, where)


def _size(path: Path) -> int:
    return (
        sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        if path.is_dir()
        else (path.stat().st_size)
    )


def fetch_from_hub(variant: Variant, hub_cache_dir: str | os.PathLike | None = None) -> list[Path]:
    """Downloads ``variant``'s untuned backbones from the Hugging Face Hub into its cache.

    Raises:
        CheckpointError: a backbone has no Hub repo, or the Hub could not give its file.
    """
    paths = []
    for backbone in variant.backbones:
        if backbone.hub is None:
            fetch = (
                f"the release zip has it: `python -m dreamsim download {variant.name}`"
                if variant.url
                else "it has no release either: write its file into the cache folder"
            )
            raise CheckpointError(
                f"DreamSim {variant.name}: {backbone.name} is not on the Hugging Face Hub; {fetch}"
            )
        paths.append(hub_file(backbone.hub, download=True, cache_dir=hub_cache_dir))
    return paths
