"""File plumbing written once: content hashes, atomic writes, an inter-process lock."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
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


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """A temporary path beside ``target`` to write to; renamed onto ``target`` when the block
    ends, removed when it raises: readers see the old file or the new one, never half of one.

    Example::

        >>> with atomic_path(scratch / "table.csv") as temporary:
        ...     _ = temporary.write_text("id\\n1\\n")
        >>> (scratch / "table.csv").read_text()
        'id\\n1\\n'
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Unique per writer: two processes (or threads) writing one target never share a file.
    temporary = target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        yield temporary
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def write_atomic(path: Path, data: bytes | str) -> None:
    """Writes ``data`` (text as UTF-8) to ``path`` through :func:`atomic_path`."""
    with atomic_path(path) as temporary:
        if isinstance(data, str):
            temporary.write_text(data, encoding="utf-8")
        else:
            temporary.write_bytes(data)


def file_lock(path: Path, *, wait: bool = True):
    """An inter-process lock held on the file ``path``, as a context manager: a second process
    waits for the first, or, with ``wait=False``, gets :class:`filelock.Timeout` at once.

    ``filelock``: ``flock`` on POSIX, ``msvcrt`` on Windows; the lock goes with the process, so
    a killed holder never leaves it taken.

    Example::

        >>> with file_lock(scratch / ".build.lock"):
        ...     pass  # one process at a time here
    """
    from filelock import FileLock

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return FileLock(path, timeout=-1 if wait else 0)


def process_exists(pid: int) -> bool:
    """Whether a process with this id runs on this machine (another user's counts too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def replace_folder(partial: Path, out: Path) -> None:
    """Renames the finished folder ``partial`` onto ``out``. An existing ``out`` is moved to
    ``.NAME.old-PID`` first and removed once the new one is in place; a writer killed between
    the two renames leaves it for :func:`remove_abandoned` to put back."""
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(partial, out)
        shutil.rmtree(old)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(partial, out)


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
