"""Small file helpers shared by the table builder, the downloader and the score cache."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in 1 MiB blocks (flat memory whatever its size)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json_atomic(path: Path, payload) -> None:
    """Written beside and renamed into place: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(payload, indent=1, sort_keys=True))
    os.replace(temporary, path)


@contextlib.contextmanager
def exclusive_lock(lock_path: Path) -> Iterator[None]:
    """Holds an exclusive ``flock`` on ``lock_path``: a second process waits for the first."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def process_exists(pid: int) -> bool:
    """Whether a process with this id runs on this machine (another user's counts too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_abandoned(out: Path) -> None:
    """Clears what killed writers of ``out`` left beside it.

    Writers assemble ``.NAME.partial-PID`` beside ``out`` and, when replacing it, move the old
    one to ``.NAME.old-PID`` for a moment. Only leftovers of processes that no longer exist are
    touched (a live writer keeps its own): partial folders are removed; an old ``out`` goes
    back into place when ``out`` is missing (the writer died between the two renames), else it
    is removed.
    """
    if not out.parent.is_dir():
        return
    leftover_name = re.compile(rf"\.{re.escape(out.name)}\.(partial|old)-(\d+)")
    for leftover in sorted(out.parent.iterdir()):
        match = leftover_name.fullmatch(leftover.name)
        if not match or process_exists(int(match.group(2))):
            continue
        if match.group(1) == "old" and not os.path.lexists(out):
            os.replace(leftover, out)
        elif leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
