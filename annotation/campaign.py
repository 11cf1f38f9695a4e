"""Campaigns of 2AFC (and JND) trials, stored in one SQLite file per campaign.

:func:`create_campaign` turns triplets into trials: every triplet a 2AFC trial whose display
side is drawn at random and recorded (``swapped``), sentinels (one candidate is the reference
itself, so the answer is known) at ``sentinel_rate``, practice trials with feedback first, and
JND trials (reference vs. each distortion) when asked. Everything is reproducible from ``seed``.

:class:`CampaignStore` is what the server uses: participants, assignment of trials inside a
write transaction (``BEGIN IMMEDIATE``: concurrent participants never over-fill a trial), one
row per vote unique on (trial, worker) so a retried POST never counts twice, every vote committed
before it is acknowledged. WAL mode: a killed server loses nothing it acknowledged.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import secrets
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np

SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS trials (
    id INTEGER PRIMARY KEY, kind TEXT NOT NULL, triplet_id INTEGER,
    ref TEXT NOT NULL, first TEXT NOT NULL, second TEXT,
    swapped INTEGER NOT NULL DEFAULT 0, expected TEXT, prompt TEXT, repeat_of INTEGER);
CREATE TABLE IF NOT EXISTS participants (
    worker TEXT PRIMARY KEY, study TEXT, session TEXT, started REAL NOT NULL, finished REAL);
CREATE TABLE IF NOT EXISTS assignments (
    worker TEXT NOT NULL, position INTEGER NOT NULL, trial INTEGER NOT NULL,
    PRIMARY KEY (worker, position), UNIQUE (worker, trial));
CREATE TABLE IF NOT EXISTS votes (
    trial INTEGER NOT NULL, worker TEXT NOT NULL, answer TEXT NOT NULL, rt_ms REAL,
    created REAL NOT NULL, PRIMARY KEY (trial, worker));
"""
KINDS = ("practice", "2afc", "sentinel", "jnd", "repeat")


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")  # an acknowledged vote survives a crash
    return db


def create_campaign(
    path: str | os.PathLike,
    table,
    *,
    trials_per_participant: int = 20,
    votes_per_trial: int = 5,
    sentinel_rate: float = 0.1,
    practice: int = 2,
    repeats: int = 2,
    policy: str = "target",
    jnd: bool = False,
    jnd_timing_ms=(1000, 500, 1000),
    seed: int = 0,
    completion_url: str | None = None,
    image_root: str | None = None,
) -> dict:
    """Writes a campaign database for the triplets of ``table``; returns its settings
    (the admin token included: keep it).

    ``repeats``: trials shown a second time to each participant (self-consistency).
    ``policy``: which trials still need votes when a participant arrives: ``target``
    (``votes_per_trial`` each), ``nights`` (while unanimous, up to ``votes_per_trial``) or
    ``beta`` (Beta-binomial stopping, at most ``votes_per_trial``); see
    :mod:`annotation.policies`.
    """
    if policy not in ("target", "nights", "beta"):
        raise ValueError(f"policy must be target, nights or beta, not {policy!r}")
    from nights.table import table_meta

    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists: a campaign is never overwritten")
    rng = np.random.default_rng(seed)
    rows = table.select_columns(["id", "ref_path", "left_path", "right_path", "prompt"]).to_pandas()
    trials = []
    for row in rows.itertuples():
        swapped = bool(rng.random() < 0.5)
        trials.append(
            (
                "2afc",
                int(row.id),
                row.ref_path,
                row.left_path,
                row.right_path,
                int(swapped),
                None,
                row.prompt,
            )
        )
        if jnd:
            for distort in (row.left_path, row.right_path):
                trials.append(
                    ("jnd", int(row.id), row.ref_path, distort, None, 0, None, row.prompt)
                )
    for kind, count in (
        ("sentinel", max(1, round(sentinel_rate * len(rows)))),
        ("practice", practice),
    ):
        for index in rng.choice(len(rows), size=min(count, len(rows)), replace=False):
            row = rows.iloc[int(index)]
            reference_on_left = bool(rng.random() < 0.5)
            first, second = (
                (row.ref_path, row.left_path)
                if reference_on_left
                else (row.left_path, row.ref_path)
            )
            trials.append(
                (
                    kind,
                    int(row.id),
                    row.ref_path,
                    first,
                    second,
                    0,
                    "left" if reference_on_left else "right",
                    row.prompt,
                )
            )
    settings = {
        "trials_per_participant": trials_per_participant,
        "votes_per_trial": votes_per_trial,
        "sentinel_rate": sentinel_rate,
        "seed": seed,
        "jnd_timing_ms": list(jnd_timing_ms),
        "repeats": repeats,
        "policy": policy,
        "completion_url": completion_url,
        "admin_token": secrets.token_urlsafe(24),
        "image_root": image_root or table_meta(table).get("root"),
        "created": time.time(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    db = _connect(partial)
    db.executescript(SCHEMA)
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO trials (kind, triplet_id, ref, first, second, swapped, "
        "expected, prompt) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        trials,
    )
    # Every 2AFC trial has a twin, shown with the sides the other way round, for repeats.
    db.execute(
        "INSERT INTO trials (kind, triplet_id, ref, first, second, swapped, expected, "
        "prompt, repeat_of) SELECT 'repeat', triplet_id, ref, first, second, "
        "1 - swapped, NULL, prompt, id FROM trials WHERE kind = '2afc'"
    )
    db.executemany(
        "INSERT INTO settings VALUES (?, ?)",
        [(key, json.dumps(value)) for key, value in settings.items()],
    )
    db.execute("COMMIT")
    db.close()
    os.replace(partial, path)
    return settings


def _locked(method):
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self.lock:
            return method(self, *args, **kwargs)

    return wrapper


class CampaignStore:
    """The campaign database, shared by the server's threads."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no campaign at {self.path} (create it first)")
        self.db = _connect(self.path)
        self.lock = threading.RLock()  # one connection: one transaction at a time
        self.settings = {
            key: json.loads(value)
            for key, value in self.db.execute("SELECT key, value FROM settings")
        }

    def _policy(self):
        from .policies import BetaBinomialStop, NightsScheme

        target = self.settings["votes_per_trial"]
        name = self.settings.get("policy", "target")
        if name == "nights":
            return NightsScheme(max_votes=target)
        if name == "beta":
            return BetaBinomialStop(max_votes=target)
        return None

    def _assign(self, worker: str) -> None:
        """Practice first, then the 2AFC/JND trials furthest from their vote target (votes
        plus open assignments) that the collection policy still wants votes for, sentinels
        mixed in, repeats of a few of them at the end; all inside one write transaction."""
        count = self.settings["trials_per_participant"]
        target = self.settings["votes_per_trial"]
        digest = hashlib.sha256(f"{self.settings['seed']}:{worker}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        practice = [
            r[0]
            for r in self.db.execute("SELECT id FROM trials WHERE kind = 'practice' ORDER BY id")
        ]
        policy = self._policy()
        load = self.db.execute(
            """
            SELECT t.id, COALESCE(v.first_side, 0), COALESCE(v.second_side, 0) FROM trials t
            LEFT JOIN (SELECT trial, COUNT(*) AS n FROM assignments GROUP BY trial) a
                ON a.trial = t.id
            LEFT JOIN (SELECT trial, SUM(answer IN ('left', 'same')) AS first_side,
                              SUM(answer IN ('right', 'different')) AS second_side
                       FROM votes GROUP BY trial) v ON v.trial = t.id
            WHERE t.kind IN ('2afc', 'jnd') AND COALESCE(a.n, 0) < ?
            ORDER BY COALESCE(a.n, 0), t.id""",
            (target,),
        )
        chosen = []
        for trial, first_side, second_side in load:
            if policy is None or policy.needs_more(int(first_side), int(second_side)):
                chosen.append(trial)
            if len(chosen) == count:
                break
        sentinels = [
            r[0]
            for r in self.db.execute("SELECT id FROM trials WHERE kind = 'sentinel' ORDER BY id")
        ]
        n_sentinels = min(len(sentinels), round(self.settings["sentinel_rate"] * len(chosen)))
        picked = (
            [int(t) for t in rng.choice(sentinels, size=n_sentinels, replace=False)]
            if n_sentinels
            else []
        )
        main = [int(t) for t in rng.permutation(chosen + picked)]
        twins = dict(self.db.execute("SELECT repeat_of, id FROM trials WHERE kind = 'repeat'"))
        repeatable = [t for t in chosen if t in twins]
        n_repeats = min(self.settings.get("repeats", 0), len(repeatable))
        repeats = (
            [twins[int(t)] for t in rng.choice(repeatable, size=n_repeats, replace=False)]
            if n_repeats
            else []
        )
        for position, trial in enumerate(practice + main + repeats):
            self.db.execute("INSERT INTO assignments VALUES (?, ?, ?)", (worker, position, trial))

    @_locked
    def start(self, worker: str, study: str | None = None, session: str | None = None) -> dict:
        """Registers a participant (or finds them again) and returns their state."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            known = self.db.execute(
                "SELECT 1 FROM participants WHERE worker = ?", (worker,)
            ).fetchone()
            if not known:
                self.db.execute(
                    "INSERT INTO participants VALUES (?, ?, ?, ?, NULL)",
                    (worker, study, session, time.time()),
                )
                self._assign(worker)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return self.state(worker)

    @_locked
    def state(self, worker: str) -> dict:
        rows = self.db.execute(
            """
            SELECT a.position, t.id, t.kind, t.ref, t.first, t.second, t.swapped, t.expected,
                   t.prompt, v.answer IS NOT NULL
            FROM assignments a JOIN trials t ON t.id = a.trial
            LEFT JOIN votes v ON v.trial = a.trial AND v.worker = a.worker
            WHERE a.worker = ? ORDER BY a.position""",
            (worker,),
        ).fetchall()
        trials = []
        for position, trial, kind, ref, first, second, swapped, expected, prompt, done in rows:
            shown = (second, first) if swapped else (first, second)
            trials.append(
                {
                    "position": position,
                    "trial": trial,
                    "kind": kind,
                    "ref": ref,
                    "left": shown[0],
                    "right": shown[1],
                    "prompt": prompt,
                    "feedback": expected if kind == "practice" else None,
                    "answered": bool(done),
                }
            )
        answered = sum(t["answered"] for t in trials)
        finished = answered == len(trials) and bool(trials)
        return {
            "worker": worker,
            "trials": trials,
            "answered": answered,
            "total": len(trials),
            "finished": finished,
            "jnd_timing_ms": self.settings["jnd_timing_ms"],
            "completion_url": self.settings["completion_url"] if finished else None,
        }

    @_locked
    def answer(self, worker: str, trial: int, answer: str, rt_ms: float | None) -> dict:
        """Stores one vote (stored side, display swap undone); idempotent per (trial, worker)."""
        row = self.db.execute(
            """
            SELECT t.kind, t.swapped FROM assignments a JOIN trials t ON t.id = a.trial
            WHERE a.worker = ? AND a.trial = ?""",
            (worker, trial),
        ).fetchone()
        if row is None:
            raise KeyError(f"trial {trial} is not assigned to this participant")
        kind, swapped = row
        valid = ("same", "different") if kind == "jnd" else ("left", "right")
        if answer not in valid:
            raise ValueError(f"answer must be one of {', '.join(valid)}")
        if kind != "jnd" and swapped:
            answer = "right" if answer == "left" else "left"
        self.db.execute(
            "INSERT OR IGNORE INTO votes VALUES (?, ?, ?, ?, ?)",
            (trial, worker, answer, rt_ms, time.time()),
        )
        state = self.state(worker)
        if state["finished"]:
            self.db.execute(
                "UPDATE participants SET finished = COALESCE(finished, ?) WHERE worker = ?",
                (time.time(), worker),
            )
        return {
            "answered": state["answered"],
            "total": state["total"],
            "finished": state["finished"],
            "completion_url": state["completion_url"],
        }

    @_locked
    def votes(self):
        """The vote table of :mod:`annotation.importers` plus ``kind`` (``2afc``, ``repeat``,
        ``sentinel``, ``jnd``), ``expected`` (sentinels) and ``trial``. Aggregate the
        ``2afc`` rows; ``repeat`` rows are for self-consistency."""
        import pandas as pd

        frame = pd.read_sql_query(
            """
            SELECT t.triplet_id AS task, v.worker, v.answer AS label, v.rt_ms, t.kind,
                   t.expected, v.trial FROM votes v JOIN trials t ON t.id = v.trial
            WHERE t.kind IN ('2afc', 'sentinel', 'jnd', 'repeat') ORDER BY v.created""",
            self.db,
        )
        frame["source"] = self.path.name
        return frame

    @_locked
    def progress(self) -> dict:
        counts = dict(
            self.db.execute(
                "SELECT t.kind, COUNT(*) FROM votes v JOIN trials t "
                "ON t.id = v.trial GROUP BY t.kind"
            ).fetchall()
        )
        participants = self.db.execute(
            "SELECT COUNT(*), COUNT(finished) FROM participants"
        ).fetchone()
        return {
            "votes": counts,
            "participants": participants[0],
            "finished": participants[1],
            "trials": dict(
                self.db.execute("SELECT kind, COUNT(*) FROM trials GROUP BY kind").fetchall()
            ),
        }


def plan_campaign(store: CampaignStore, policy=None):
    """Per 2AFC trial of a campaign: votes so far and whether ``policy`` (default: the
    campaign's own) asks for more."""
    import pandas as pd

    from .policies import NightsScheme, plan

    votes = store.votes()
    votes = votes[votes["kind"] == "2afc"]
    tasks = [
        r[0]
        for r in store.db.execute(
            "SELECT DISTINCT triplet_id FROM trials WHERE kind = '2afc' ORDER BY triplet_id"
        )
    ]
    policy = policy or store._policy() or NightsScheme(store.settings["votes_per_trial"])
    return plan(votes if len(votes) else pd.DataFrame(columns=["task", "label"]), tasks, policy)
