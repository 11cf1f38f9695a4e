"""Campaigns of 2AFC (and JND) trials, stored in one SQLite file per campaign.

:func:`create_campaign` turns triplets into trials: every triplet a 2AFC trial whose display
side is drawn at random and recorded (``swapped``), sentinels (one candidate is the reference
itself, so the answer is known) at ``sentinel_rate``, practice trials with feedback first, and
JND trials (reference vs. each distortion) when asked. Everything is reproducible from ``seed``.
It refuses a table whose images it could not serve.

:class:`CampaignStore` is what the server uses: participants, assignment of trials inside a
write transaction (``BEGIN IMMEDIATE``: concurrent participants never over-fill a trial), one
row per vote unique on (trial, worker) so a retried POST never counts twice, every vote committed
before it is acknowledged. WAL mode: a killed server loses nothing it acknowledged.

A participant holds their unanswered trials for the campaign's time limit (the study's maximum
time); after it, or once released (``nights annotate release``), those trials go back to the
pool. A newcomer with no trial left is told the study is full and gets no completion code.
Participants see their trials one at a time, by number, with per-participant image URLs: nothing
they receive tells a sentinel or a repeat from a real trial. Each vote stores the server's own
time between handing the trial out and receiving its answer (``server_ms``) beside the
client's ``rt_ms``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import NamedTuple

import numpy as np

from .errors import CampaignError, ParticipantError

FORMAT = 2  # the layout of the tables below; a file of another format is refused
SCHEMA = """
CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE trials (
    id INTEGER PRIMARY KEY, kind TEXT NOT NULL, triplet_id INTEGER,
    ref TEXT NOT NULL, first TEXT NOT NULL, second TEXT,
    swapped INTEGER NOT NULL DEFAULT 0, expected TEXT, prompt TEXT, repeat_of INTEGER);
CREATE TABLE participants (
    worker TEXT PRIMARY KEY, study TEXT, session TEXT, started REAL NOT NULL,
    expires REAL NOT NULL, finished REAL, released REAL);
CREATE TABLE assignments (
    worker TEXT NOT NULL, position INTEGER NOT NULL, trial INTEGER NOT NULL, served REAL,
    PRIMARY KEY (worker, position), UNIQUE (worker, trial));
CREATE TABLE images (
    token TEXT PRIMARY KEY, worker TEXT NOT NULL, position INTEGER NOT NULL,
    slot TEXT NOT NULL, path TEXT NOT NULL);
CREATE INDEX images_by_trial ON images (worker, position);
CREATE TABLE votes (
    trial INTEGER NOT NULL, worker TEXT NOT NULL, answer TEXT NOT NULL, rt_ms REAL,
    server_ms REAL, created REAL NOT NULL, PRIMARY KEY (trial, worker));
CREATE TABLE image_failures (
    worker TEXT NOT NULL, position INTEGER NOT NULL, reports INTEGER NOT NULL,
    detail TEXT, last REAL NOT NULL, PRIMARY KEY (worker, position));
"""
KINDS = ("practice", "2afc", "sentinel", "jnd", "repeat")
ANSWERS = {"jnd": ("same", "different")}  # every other kind: left or right, as displayed
MAX_RT_MS = 600_000  # a response time over 10 minutes is not a response time
MESSAGES = {
    "full": "Sorry, this study is full: no trials are left for new participants right now. "
    "Please return the study; no completion code is given for it.",
    "expired": "The time for this study ran out and your remaining trials went to other "
    "participants; your answers so far are saved. Please return the study.",
    "released": "This session was closed because the study was returned; thank you.",
}


class Trial(NamedTuple):
    """One trial as :func:`create_campaign` writes it (repeats are copied from 2AFC rows).

    ``first``/``second`` are the stored left/right candidates (2AFC), the distortion and
    nothing (JND), or the two candidates one of which is the reference (sentinel, practice).
    ``swapped``: the display shows ``second`` on the left. ``expected``: the known answer.
    """

    kind: str
    triplet_id: int
    ref: str
    first: str
    second: str | None = None
    swapped: bool = False
    expected: str | None = None
    prompt: str | None = None


def _connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)


def _use_wal(db: sqlite3.Connection) -> None:
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")  # an acknowledged vote survives a crash


def _check_settings(
    trials_per_participant, votes_per_trial, sentinel_rate, practice, repeats, time_limit_minutes
) -> None:
    for name, value, least in (
        ("trials_per_participant", trials_per_participant, 1),
        ("votes_per_trial", votes_per_trial, 1),
        ("practice", practice, 0),
        ("repeats", repeats, 0),
    ):
        if not isinstance(value, int) or value < least:
            raise CampaignError(f"{name} must be a whole number of at least {least}, not {value!r}")
    if not 0 <= sentinel_rate <= 1:
        raise CampaignError(f"sentinel_rate must be between 0 and 1, not {sentinel_rate!r}")
    if not (math.isfinite(time_limit_minutes) and time_limit_minutes > 0):
        raise CampaignError(
            f"time_limit_minutes must be a positive number, not {time_limit_minutes!r}"
        )


def _check_images(image_root: str | None, trials: list[Trial]) -> None:
    """Refuses trials whose images the app could not serve: no image folder, a path leaving
    it, or a file that is missing or not an image."""
    from nights.images import check_image

    if image_root is None:
        raise CampaignError(
            "the table has no image folder (made from a Parquet or Hub split?): give "
            "image_root (--image-root), the folder its ref_path/left_path/right_path are under"
        )
    root = Path(image_root)
    seen: dict[str, str | None] = {}
    bad = []
    for trial in trials:
        for slot, path in (("ref", trial.ref), ("first", trial.first), ("second", trial.second)):
            if path is None:
                continue
            if path not in seen:
                relative = PurePosixPath(path)
                seen[path] = (
                    "outside the image folder"
                    if relative.is_absolute() or ".." in relative.parts
                    else check_image(root / path, decode=False)
                )
            if seen[path]:
                bad.append((trial.triplet_id, slot, path, seen[path]))
    if bad:
        triplet, slot, path, reason = bad[0]
        raise CampaignError(
            f"{len(bad)} trial image(s) cannot be served, e.g. {root / path} (triplet "
            f"{triplet}, {slot}): {reason}; restore the files or give the right image_root"
        )


def _make_trials(rows, rng, *, jnd: bool, sentinel_rate: float, practice: int) -> list[Trial]:
    trials = []
    for row in rows.itertuples():
        swapped = bool(rng.random() < 0.5)
        trials.append(
            Trial("2afc", int(row.id), row.ref_path, row.left_path, row.right_path, swapped,
                  prompt=row.prompt)
        )  # fmt: skip
        if jnd:
            for distortion in (row.left_path, row.right_path):
                trials.append(
                    Trial("jnd", int(row.id), row.ref_path, distortion, prompt=row.prompt)
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
            expected = "left" if reference_on_left else "right"
            trials.append(
                Trial(kind, int(row.id), row.ref_path, first, second, expected=expected,
                      prompt=row.prompt)
            )  # fmt: skip
    return trials


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
    image_root: str | os.PathLike | None = None,
    time_limit_minutes: float = 60,
) -> dict:
    """Writes a campaign database for the triplets of ``table``; returns its settings
    (the admin token included: keep it).

    Args:
        path: the ``.sqlite`` file to write (never overwritten).
        table: triplets, as :func:`nights.load_nights` returns them.
        trials_per_participant: real trials (2AFC/JND) per participant; sentinels, practice
            and repeats come on top.
        votes_per_trial: the most votes a trial gets (the policy may stop earlier).
        sentinel_rate: sentinels per real trial.
        practice: practice trials, with feedback, at the start.
        repeats: trials shown a second time to each participant, sides reversed
            (self-consistency).
        policy: a name of :data:`annotation.policies.POLICIES`: which trials still need votes
            when a participant arrives.
        jnd: also a JND trial for each distortion; ``jnd_timing_ms`` its reference, mask and
            distortion durations.
        seed: all random draws follow it.
        completion_url: where a participant goes after their last answer (Prolific's).
        image_root: the folder the table's image paths are under (default: the table's own).
        time_limit_minutes: how long a participant holds their trials (set it to the study's
            maximum time); unanswered trials then go back to the pool.

    Returns:
        The settings written (dict).

    Raises:
        CampaignError: bad settings, or images the app could not serve (the first named).
        CampaignError: ``path`` exists (a campaign is never overwritten).

    Example::

        >>> from nights import load_nights
        >>> from annotation.campaign import create_campaign
        >>> table = load_nights("test", root="~/data/nights")          # doctest: +SKIP
        >>> create_campaign("study.sqlite", table, time_limit_minutes=45)  # doctest: +SKIP
    """
    from nights.table import table_meta

    from .policies import make_policy

    _check_settings(
        trials_per_participant, votes_per_trial, sentinel_rate, practice, repeats,
        time_limit_minutes,
    )  # fmt: skip
    make_policy(policy, votes_per_trial)
    path = Path(path)
    if path.exists():
        raise CampaignError(f"{path} exists: a campaign is never overwritten")
    if len(table) == 0:
        raise CampaignError("the table has no triplets")
    rows = table.select_columns(["id", "ref_path", "left_path", "right_path", "prompt"]).to_pandas()
    trials = _make_trials(
        rows, np.random.default_rng(seed), jnd=jnd, sentinel_rate=sentinel_rate, practice=practice
    )
    image_root = image_root or table_meta(table).get("root")
    _check_images(None if image_root is None else str(image_root), trials)
    settings = {
        "format": FORMAT,
        "trials_per_participant": trials_per_participant,
        "votes_per_trial": votes_per_trial,
        "sentinel_rate": sentinel_rate,
        "seed": seed,
        "jnd_timing_ms": list(jnd_timing_ms),
        "repeats": repeats,
        "policy": policy,
        "completion_url": completion_url,
        "admin_token": secrets.token_urlsafe(24),
        "image_root": str(Path(image_root).resolve()),
        "time_limit_minutes": time_limit_minutes,
        "created": time.time(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    db = _connect(partial)
    _use_wal(db)
    db.executescript(SCHEMA)
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO trials (kind, triplet_id, ref, first, second, swapped, "
        "expected, prompt) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [trial._replace(swapped=int(trial.swapped)) for trial in trials],
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


def _open_campaign(path: Path) -> tuple[sqlite3.Connection, dict]:
    """A connection and the settings of a campaign file, or a CampaignError naming it. The
    file is only read until it proved to be a campaign (and never opened but through SQLite:
    closing another descriptor of it would drop this process's SQLite locks)."""
    if path.stat().st_size == 0:
        raise CampaignError(
            f"{path}: an empty file, not a campaign (make one with annotate create)"
        )
    db = _connect(path)
    try:
        return db, _check_campaign(db, path)
    except BaseException:
        db.close()
        raise


def _check_campaign(db: sqlite3.Connection, path: Path) -> dict:
    """The settings of an intact campaign of this format, in WAL mode from now on."""
    try:
        damage = db.execute("PRAGMA quick_check(1)").fetchone()[0]
        stored = db.execute("SELECT key, value FROM settings").fetchall()
    except sqlite3.DatabaseError as error:
        raise CampaignError(
            f"{path}: not a readable campaign database ({error}); restore a copy or make one "
            "with annotate create"
        ) from None
    if damage != "ok":
        raise CampaignError(f"{path}: the database is damaged ({damage}); restore a copy")
    try:
        settings = {key: json.loads(value) for key, value in stored}
    except (TypeError, ValueError) as error:
        raise CampaignError(f"{path}: unreadable campaign settings ({error})") from None
    if settings.get("format") != FORMAT:
        raise CampaignError(
            f"{path}: a campaign of format {settings.get('format', 1)}, this version reads "
            f"format {FORMAT}; export its votes with the version that made it and create it again"
        )
    try:
        _use_wal(db)
    except sqlite3.DatabaseError as error:
        raise CampaignError(
            f"{path}: cannot be written ({error}); votes are stored in it"
        ) from None
    return settings


class CampaignStore:
    """The campaign database, shared by the server's threads.

    Args:
        path: the campaign ``.sqlite`` file.
        clock: seconds since the epoch (``time.time``; tests pass their own).

    Raises:
        CampaignError: no file at ``path``.
        CampaignError: the file is empty, not SQLite, damaged or not a campaign.
    """

    def __init__(self, path: str | os.PathLike, clock: Callable[[], float] = time.time):
        self.path = Path(path)
        if not self.path.is_file():
            raise CampaignError(f"no campaign at {self.path} (create it first)")
        self.db, self.settings = _open_campaign(self.path)
        self.clock = clock
        self.lock = threading.RLock()  # one connection: one transaction at a time
        self.image_root = Path(self.settings["image_root"])

    @property
    def policy(self):
        """The campaign's collection policy (:mod:`annotation.policies`)."""
        from .policies import make_policy

        return make_policy(self.settings["policy"], self.settings["votes_per_trial"])

    @_locked
    def tasks(self) -> list[int]:
        """The triplet ids of the campaign's 2AFC trials, ascending."""
        return [
            int(row[0])
            for row in self.db.execute(
                "SELECT DISTINCT triplet_id FROM trials WHERE kind = '2afc' ORDER BY triplet_id"
            )
        ]

    @contextlib.contextmanager
    def _transaction(self):
        """A write transaction: other connections (server processes, the CLI) wait for it."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _choose(self, now: float, count: int) -> list[int]:
        """Up to ``count`` 2AFC/JND trials furthest from their vote target that the policy still
        wants votes for. A trial's load is its votes plus the unanswered trials held by
        participants whose time has not run out and who were not released."""
        target = self.settings["votes_per_trial"]
        load = self.db.execute(
            """
            SELECT t.id, COALESCE(v.first_side, 0), COALESCE(v.second_side, 0) FROM trials t
            LEFT JOIN (
                SELECT a.trial, COUNT(*) AS n FROM assignments a
                JOIN participants p ON p.worker = a.worker
                WHERE (p.released IS NULL AND p.expires > ?)
                   OR EXISTS (SELECT 1 FROM votes v WHERE v.trial = a.trial
                              AND v.worker = a.worker)
                GROUP BY a.trial) held ON held.trial = t.id
            LEFT JOIN (SELECT trial, SUM(answer IN ('left', 'same')) AS first_side,
                              SUM(answer IN ('right', 'different')) AS second_side
                       FROM votes GROUP BY trial) v ON v.trial = t.id
            WHERE t.kind IN ('2afc', 'jnd') AND COALESCE(held.n, 0) < ?
            ORDER BY COALESCE(held.n, 0), t.id""",
            (now, target),
        )
        policy = self.policy
        chosen = []
        for trial, first_side, second_side in load:
            if policy.needs_more(int(first_side), int(second_side)):
                chosen.append(int(trial))
            if len(chosen) == count:
                break
        return chosen

    def _assign(self, worker: str, now: float) -> bool:
        """Practice first, then the chosen trials with sentinels mixed in and a few of them
        repeated later (sides reversed), each repeat at a random place after its original;
        per-participant image tokens for all. False (nothing written) when no real trial is
        left."""
        chosen = self._choose(now, self.settings["trials_per_participant"])
        if not chosen:
            return False
        digest = hashlib.sha256(f"{self.settings['seed']}:{worker}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        practice = [
            r[0]
            for r in self.db.execute("SELECT id FROM trials WHERE kind = 'practice' ORDER BY id")
        ]
        sentinels = [
            r[0]
            for r in self.db.execute("SELECT id FROM trials WHERE kind = 'sentinel' ORDER BY id")
        ]
        n_sentinels = min(len(sentinels), round(self.settings["sentinel_rate"] * len(chosen)))
        picked = [int(t) for t in rng.choice(sentinels, size=n_sentinels, replace=False)]
        order = [int(t) for t in rng.permutation(chosen + picked)]
        twins = dict(
            self.db.execute(
                "SELECT repeat_of, id FROM trials WHERE kind = 'repeat' AND repeat_of IN "
                f"({', '.join('?' * len(chosen))})",
                chosen,
            )
        )
        repeatable = [t for t in chosen if t in twins]
        n_repeats = min(self.settings["repeats"], len(repeatable))
        for original in rng.choice(repeatable, size=n_repeats, replace=False):
            after = order.index(int(original)) + 1
            order.insert(int(rng.integers(after, len(order) + 1)), twins[int(original)])
        trials = practice + order
        shown = {
            trial: (ref, second, first) if swapped else (ref, first, second)
            for trial, ref, first, second, swapped in self.db.execute(
                "SELECT id, ref, first, second, swapped FROM trials WHERE id IN "
                f"({', '.join('?' * len(trials))})",
                trials,
            )
        }
        assignments, images = [], []
        for position, trial in enumerate(trials):
            assignments.append((worker, position, trial, now if position == 0 else None))
            for slot, path in zip(("ref", "left", "right"), shown[trial]):
                if path is not None:
                    images.append((secrets.token_urlsafe(16), worker, position, slot, path))
        self.db.executemany("INSERT INTO assignments VALUES (?, ?, ?, ?)", assignments)
        self.db.executemany("INSERT INTO images VALUES (?, ?, ?, ?, ?)", images)
        return True

    @_locked
    def start(self, worker: str, study: str | None = None, session: str | None = None) -> dict:
        """Registers a participant (or finds them again) and returns their :meth:`state`; a
        newcomer for whom no real trial is left is not registered and gets the ``full`` state.
        """
        now = self.clock()
        with self._transaction():
            known = self.db.execute(
                "SELECT 1 FROM participants WHERE worker = ?", (worker,)
            ).fetchone()
            if not known:
                if not self._assign(worker, now):
                    return self._view(worker, "full", 0, 0)
                expires = now + 60 * self.settings["time_limit_minutes"]
                self.db.execute(
                    "INSERT INTO participants VALUES (?, ?, ?, ?, ?, NULL, NULL)",
                    (worker, study, session, now, expires),
                )
        return self.state(worker)

    def _view(self, worker: str, status: str, answered: int, total: int) -> dict:
        """The state a participant sees, without its current trial."""
        return {
            "worker": worker,
            "status": status,
            "message": MESSAGES.get(status),
            "answered": answered,
            "total": total,
            "trial": None,
            "jnd_timing_ms": self.settings["jnd_timing_ms"],
            "completion_url": self.settings["completion_url"] if status == "finished" else None,
        }

    def _participant(self, worker: str):
        row = self.db.execute(
            "SELECT expires, finished, released FROM participants WHERE worker = ?", (worker,)
        ).fetchone()
        if row is None:
            raise ParticipantError(
                f"no session for participant {worker!r}: open /api/session first", 404
            )
        return row

    def _counts(self, worker: str) -> tuple[int, int]:
        """The participant's trials and answers (answers come in order: the next trial's
        number is the count of answers)."""
        return self.db.execute(
            """SELECT COUNT(*), COUNT(v.trial) FROM assignments a
            LEFT JOIN votes v ON v.trial = a.trial AND v.worker = a.worker
            WHERE a.worker = ?""",
            (worker,),
        ).fetchone()

    @_locked
    def state(self, worker: str) -> dict:
        """What the participant sees: ``status`` (``active``, ``finished``, ``expired``,
        ``released`` or ``full``), a ``message`` when it is over without completion,
        ``answered``/``total`` and the current ``trial`` (``trial`` number, ``kind`` as the
        page shows it: ``practice``, ``2afc`` or ``jnd``, opaque image URLs ``ref``, ``left``,
        ``right``, ``feedback`` for practice); ``completion_url`` once finished."""
        expires, finished, released = self._participant(worker)
        total, answered = self._counts(worker)
        if released is not None:
            status = "released"
        elif finished is not None or answered == total:
            status = "finished"
        elif self.clock() >= expires:
            status = "expired"
        else:
            status = "active"
        state = self._view(worker, status, answered, total)
        if status == "active":
            kind, expected = self.db.execute(
                """SELECT t.kind, t.expected FROM assignments a JOIN trials t ON t.id = a.trial
                WHERE a.worker = ? AND a.position = ?""",
                (worker, answered),
            ).fetchone()
            urls = dict(
                self.db.execute(
                    "SELECT slot, '/images/' || token FROM images "
                    "WHERE worker = ? AND position = ?",
                    (worker, answered),
                )
            )
            state["trial"] = {
                "trial": answered,
                "kind": kind if kind in ("practice", "jnd") else "2afc",
                "ref": urls["ref"],
                "left": urls["left"],
                "right": urls.get("right"),
                "feedback": expected if kind == "practice" else None,
            }
        return state

    def image_file(self, path: str) -> Path | None:
        """The file of a trial image path, when it can be served now."""
        file = self.image_root / path
        return file if file.is_file() and os.access(file, os.R_OK) else None

    @_locked
    def image(self, token: str) -> Path | None:
        """The file behind an image URL token handed to a participant, or None."""
        row = self.db.execute("SELECT path FROM images WHERE token = ?", (token,)).fetchone()
        return None if row is None else self.image_file(row[0])

    @_locked
    def answer(self, worker: str, trial: int, answer: str, rt_ms: float | None) -> dict:
        """Stores the answer to the participant's trial number ``trial`` (the stored side,
        display swap undone) with the server's time since it handed that trial out; returns
        the new :meth:`state`. Idempotent per trial: a retried answer is acknowledged again and
        stored once.

        Raises:
            ParticipantError: unknown participant or trial (404), not their current trial or
                its images cannot be served (409), time ran out or released (410), an answer
                that is not one of the trial's (422).
        """
        now = self.clock()
        with self._transaction():
            expires, _, released = self._participant(worker)
            row = self.db.execute(
                """SELECT a.trial, a.served, t.kind, t.swapped, v.answer IS NOT NULL
                FROM assignments a JOIN trials t ON t.id = a.trial
                LEFT JOIN votes v ON v.trial = a.trial AND v.worker = a.worker
                WHERE a.worker = ? AND a.position = ?""",
                (worker, trial),
            ).fetchone()
            if row is None:
                raise ParticipantError(f"this participant has no trial {trial}", 404)
            stored_trial, served, kind, swapped, done = row
            if not done:
                self._check_answerable(worker, trial, kind, answer, now, expires, released)
                if kind != "jnd" and swapped:
                    answer = "right" if answer == "left" else "left"
                server_ms = None if served is None else 1000 * (now - served)
                self.db.execute(
                    "INSERT INTO votes VALUES (?, ?, ?, ?, ?, ?)",
                    (stored_trial, worker, answer, rt_ms, server_ms, now),
                )
                self.db.execute(
                    "UPDATE assignments SET served = ? WHERE worker = ? AND position = ?",
                    (now, worker, trial + 1),
                )
                if not self.db.execute(
                    "SELECT 1 FROM assignments WHERE worker = ? AND position > ?", (worker, trial)
                ).fetchone():
                    self.db.execute(
                        "UPDATE participants SET finished = ? WHERE worker = ?", (now, worker)
                    )
        return self.state(worker)

    def _check_answerable(self, worker, trial, kind, answer, now, expires, released) -> None:
        if released is not None:
            raise ParticipantError(MESSAGES["released"], 410)
        if now >= expires:
            raise ParticipantError(MESSAGES["expired"], 410)
        current = self._counts(worker)[1]
        if trial != current:
            raise ParticipantError(f"answer trial {current} first; trials come in order", 409)
        valid = ANSWERS.get(kind, ("left", "right"))
        if answer not in valid:
            raise ParticipantError(f"answer must be one of {', '.join(valid)}", 422)
        paths = [
            row[0]
            for row in self.db.execute(
                "SELECT path FROM images WHERE worker = ? AND position = ?", (worker, trial)
            )
        ]
        if not all(self.image_file(path) for path in paths):
            raise ParticipantError(
                f"the images of trial {trial} cannot be served, so it cannot be answered", 409
            )

    @_locked
    def report_image_failure(self, worker: str, trial: int, detail: str) -> None:
        """Records that the participant's page could not load the images of its trial number
        ``trial`` (``detail``: what the page saw); counted per trial and participant."""
        with self._transaction():
            self._participant(worker)
            if not self.db.execute(
                "SELECT 1 FROM assignments WHERE worker = ? AND position = ?", (worker, trial)
            ).fetchone():
                raise ParticipantError(f"this participant has no trial {trial}", 404)
            self.db.execute(
                """INSERT INTO image_failures VALUES (?, ?, 1, ?, ?)
                ON CONFLICT (worker, position) DO UPDATE SET reports = reports + 1,
                    detail = excluded.detail, last = excluded.last""",
                (worker, trial, detail[:200], self.clock()),
            )

    @_locked
    def release(self, worker: str) -> int:
        """Frees a participant who returned the study: their unanswered trials go back to the
        pool at once and they can answer no more (their votes stay). Returns how many trials
        were freed; releasing twice frees nothing more.

        Raises:
            ParticipantError: no such participant (404).
        """
        now = self.clock()
        with self._transaction():
            expires, _, released = self._participant(worker)
            if released is not None:
                return 0
            self.db.execute("UPDATE participants SET released = ? WHERE worker = ?", (now, worker))
            if now >= expires:
                return 0
            return self.db.execute(
                """SELECT COUNT(*) FROM assignments a JOIN trials t ON t.id = a.trial
                WHERE a.worker = ? AND t.kind IN ('2afc', 'jnd') AND NOT EXISTS (
                    SELECT 1 FROM votes v WHERE v.trial = a.trial AND v.worker = a.worker)""",
                (worker,),
            ).fetchone()[0]

    @_locked
    def votes(self):
        """The vote table of :mod:`annotation.importers` plus ``kind`` (``2afc``, ``repeat``,
        ``sentinel``, ``jnd``), ``expected`` (sentinels), ``trial`` and ``server_ms`` (the
        server's time from handing the trial out to receiving the answer). Aggregate the
        ``2afc`` rows; ``repeat`` rows are for self-consistency."""
        import pandas as pd

        frame = pd.read_sql_query(
            """
            SELECT t.triplet_id AS task, v.worker, v.answer AS label, v.rt_ms, t.kind,
                   t.expected, v.trial, v.server_ms FROM votes v JOIN trials t ON t.id = v.trial
            WHERE t.kind IN ('2afc', 'sentinel', 'jnd', 'repeat') ORDER BY v.created""",
            self.db,
        )
        frame["source"] = self.path.name
        return frame

    @_locked
    def progress(self) -> dict:
        """Votes per kind; participants (``active``, ``finished``, ``expired``, ``released``);
        assigned 2AFC/JND trials ``answered``, ``open`` (held by an active participant),
        ``expired`` or ``released`` (back in the pool); image load failures reported by pages;
        the campaign's trials per kind."""
        now = self.clock()
        votes = dict(
            self.db.execute(
                "SELECT t.kind, COUNT(*) FROM votes v JOIN trials t "
                "ON t.id = v.trial GROUP BY t.kind"
            ).fetchall()
        )
        participants = dict.fromkeys(("active", "finished", "expired", "released"), 0)
        participants.update(
            self.db.execute(
                """SELECT CASE WHEN released IS NOT NULL THEN 'released'
                    WHEN finished IS NOT NULL THEN 'finished'
                    WHEN expires <= ? THEN 'expired' ELSE 'active' END, COUNT(*)
                FROM participants GROUP BY 1""",
                (now,),
            ).fetchall()
        )
        assigned = self.db.execute(
            """SELECT COUNT(v.trial),
                SUM(v.trial IS NULL AND p.released IS NULL AND p.expires > ?),
                SUM(v.trial IS NULL AND p.released IS NULL AND p.expires <= ?),
                SUM(v.trial IS NULL AND p.released IS NOT NULL)
            FROM assignments a JOIN participants p ON p.worker = a.worker
            JOIN trials t ON t.id = a.trial
            LEFT JOIN votes v ON v.trial = a.trial AND v.worker = a.worker
            WHERE t.kind IN ('2afc', 'jnd')""",
            (now, now),
        ).fetchone()
        failures = self.db.execute(
            "SELECT COALESCE(SUM(reports), 0), COUNT(*) FROM image_failures"
        ).fetchone()
        return {
            "votes": votes,
            "participants": sum(participants.values()),
            **participants,
            "assigned_trials": dict(
                zip(("answered", "open", "expired", "released"), (n or 0 for n in assigned))
            ),
            "image_failures": {"reports": failures[0], "trials": failures[1]},
            "trials": dict(
                self.db.execute("SELECT kind, COUNT(*) FROM trials GROUP BY kind").fetchall()
            ),
        }


def plan_campaign(store: CampaignStore, policy=None):
    """Per 2AFC trial of a campaign: votes so far and whether ``policy`` (default: the
    campaign's own) asks for more."""
    import pandas as pd

    from .policies import plan

    votes = store.votes()
    votes = votes[votes["kind"] == "2afc"]
    if votes.empty:
        votes = pd.DataFrame(columns=["task", "label"])
    return plan(votes, store.tasks(), policy or store.policy)
