"""An on-disk cache of embeddings and pair distances, keyed by (metric id, image content).

One SQLite file (WAL mode, safe for several processes of a distributed run). Keys are the
sha256 of the image bytes as stored, so a second run, or a run on another split sharing
images, computes nothing it has seen; rows are committed batch by batch, so a killed run
resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from . import _paths
from ._files import file_lock

_CHUNK = 900  # SQLite allows 999 parameters a statement in old builds


def default_cache_path() -> Path:
    return _paths.nights_home() / "cache" / "scores.sqlite"


def content_key(storage: dict) -> str:
    """sha256 of an image as a ``datasets.Image`` storage dict holds it (bytes or a file)."""
    data = storage.get("bytes")
    if data is None:
        # open() with the str, not Path(): pathlib interns every name it parses, which would
        # keep one string per image of a 100k-triplet table alive for the whole process.
        with open(storage["path"], "rb") as file:
            data = file.read()
    return hashlib.sha256(data).hexdigest()


class ScoreCache:
    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else default_cache_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=60)
        # Switching a new file to WAL can fail at once with "database is locked" when another
        # process (a second rank) does the same; so one process at a time sets the file up.
        with file_lock(self.path.with_name(self.path.name + ".lock")):
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.executescript("""
            CREATE TABLE IF NOT EXISTS embeddings (
                metric TEXT, image TEXT, dim INTEGER, shape TEXT, vector BLOB,
                PRIMARY KEY (metric, image));
            CREATE TABLE IF NOT EXISTS pairs (
                metric TEXT, ref TEXT, other TEXT, distance REAL,
                PRIMARY KEY (metric, ref, other));
        """)

    def close(self) -> None:
        self.db.close()

    def _known_images(self, metric: str, keys: list[str]) -> set[str]:
        """The subset of ``keys`` cached for ``metric`` (queried in chunks: memory follows
        the question, not the size of the cache)."""
        known: set[str] = set()
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            query = (
                f"SELECT image FROM embeddings WHERE metric = ? AND image IN "
                f"({','.join('?' * len(chunk))})"
            )
            known.update(row[0] for row in self.db.execute(query, (metric, *chunk)))
        return known

    def missing_embeddings(self, metric: str, keys: Iterable[str]) -> list[str]:
        wanted = sorted(set(keys))
        known = self._known_images(metric, wanted)
        return [key for key in wanted if key not in known]

    def put_embeddings(self, metric: str, keys: list[str], vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        rows = [
            (metric, key, vector.size, ",".join(map(str, vector.shape)), vector.tobytes())
            for key, vector in zip(keys, vectors)
        ]
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?, ?)", rows)

    def get_embeddings(self, metric: str, keys: list[str]) -> np.ndarray:
        wanted = sorted(set(keys))
        found = {}
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start : start + _CHUNK]
            query = (
                f"SELECT image, shape, vector FROM embeddings WHERE metric = ? AND image IN "
                f"({','.join('?' * len(chunk))})"
            )
            for image, shape, vector in self.db.execute(query, (metric, *chunk)):
                found[image] = np.frombuffer(vector, dtype=np.float32).reshape(
                    tuple(int(s) for s in shape.split(","))
                )
        return np.stack([found[key] for key in keys])

    def _pair_distances(self, metric: str, pairs: list[tuple[str, str]]) -> dict:
        """Cached distances of ``pairs`` (absent ones left out), queried in chunks."""
        found = {}
        for start in range(0, len(pairs), _CHUNK // 2):
            chunk = pairs[start : start + _CHUNK // 2]
            query = (
                f"SELECT ref, other, distance FROM pairs WHERE metric = ? AND (ref, other) "
                f"IN (VALUES {','.join(['(?, ?)'] * len(chunk))})"
            )
            flat = [key for pair in chunk for key in pair]
            found.update(((a, b), d) for a, b, d in self.db.execute(query, (metric, *flat)))
        return found

    def missing_pairs(self, metric: str, pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        wanted = sorted(set(pairs))
        known = self._pair_distances(metric, wanted)
        return [pair for pair in wanted if pair not in known]

    def put_pairs(self, metric: str, pairs: list[tuple[str, str]], distances) -> None:
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO pairs VALUES (?, ?, ?, ?)",
                [(metric, a, b, float(d)) for (a, b), d in zip(pairs, distances)],
            )

    def get_pairs(self, metric: str, pairs: list[tuple[str, str]]) -> np.ndarray:
        known = self._pair_distances(metric, sorted(set(pairs)))
        return np.array([known[pair] for pair in pairs], dtype=np.float64)
