"""The journal: one SQLite row per frame, the watcher's source of truth.

A frame walks `seen -> decided -> done` (or `-> quarantined`). The decision and the intended
destination are committed *before* the file is moved (write-ahead intent), so after a crash at
any instant the sink can finish or verify the move from the row alone; see `edge.sink`.

Durability: WAL mode with `synchronous=FULL`. With NORMAL, a power cut may drop the last
committed transactions; losing a `decided` row after its file was already renamed would leave a
frame in OUT that the journal cannot find. FULL fsyncs the WAL on every commit, which keeps the
intent durable before the rename. The cost is one fsync per commit, and commits are batched
(one per batch of frames), so it is small beside inference.

A frame's identity is (relpath, sha256): the same name reappearing with other content (a new
card reusing IMG_0001.JPG) is a new frame with its own row; its destination gets a suffix.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from edge.durable import fsync_dir

SCHEMA_VERSION = 3
JOURNAL_NAME = "journal.sqlite"


class Verdict(StrEnum):
    """Where a frame goes: the one spelling of a decision in the journal, the folders of OUT,
    the results file and the code. A StrEnum, so a row's text compares equal to it."""

    TAGGED = "tagged"
    REVIEW = "review"
    EMPTY = "empty"
    QUARANTINE = "quarantine"


STATES = ("seen", "decided", "done", "quarantined", "vanished")
DECISIONS = tuple(Verdict)
TERMINAL = ("done", "quarantined", "vanished")

_SCHEMA_V1 = """
CREATE TABLE frames (
    id          INTEGER PRIMARY KEY,
    relpath     TEXT NOT NULL,              -- relative to the inbox, '/'-separated
    camera      TEXT NOT NULL,              -- first subfolder, '' for frames at the top
    size        INTEGER NOT NULL,
    mtime       REAL NOT NULL,
    sha256      TEXT NOT NULL,
    state       TEXT NOT NULL DEFAULT 'seen',
    seen_at     REAL NOT NULL,
    decided_at  REAL,
    done_at     REAL,
    label       TEXT,
    class_index INTEGER,
    softmax     REAL,
    overmap     REAL,
    confidence  REAL,
    extra       TEXT,                       -- JSON: measure, mask source, anything else
    decision    TEXT,
    reason      TEXT,
    dest        TEXT,                       -- relative to OUT, '/'-separated
    UNIQUE (relpath, sha256)
);
CREATE INDEX frames_state ON frames (state);
CREATE INDEX frames_relpath ON frames (relpath, size, mtime);
CREATE UNIQUE INDEX frames_dest ON frames (dest) WHERE dest IS NOT NULL;
"""

# A person's answer to a review frame (`edge review`): the intent (where the frame goes) is
# committed before the frame moves out of OUT/review, `done` once it lies at `dest`.
# frame_id is UNIQUE: a frame is answered once. `previous_*`: what the watcher had decided.
_SCHEMA_V2 = """
CREATE TABLE answers (
    id                INTEGER PRIMARY KEY,
    frame_id          INTEGER NOT NULL UNIQUE REFERENCES frames (id),
    answer            TEXT NOT NULL,        -- accept, label, empty, person or vehicle
    label             TEXT,                 -- the person's label, NULL for empty
    decision          TEXT NOT NULL,        -- tagged or empty
    previous_decision TEXT NOT NULL,
    previous_label    TEXT,
    who               TEXT NOT NULL,
    answered_at       REAL NOT NULL,
    src               TEXT NOT NULL,        -- relative to OUT, where the frame lay
    dest              TEXT NOT NULL,        -- relative to OUT, where it goes
    state             TEXT NOT NULL DEFAULT 'intent',  -- intent, then done
    done_at           REAL
);
CREATE INDEX answers_state ON answers (state);
"""

# What was a JSON blob (`extra`) becomes columns a query can read, so adding a per-frame field
# is one column here and one field of Decision/Frame. `top_k` stays JSON: it is a list.
# `overlay_data`: what drawing the review overlay needs (edge.overlay.OverlayData), so the
# picture is drawn when someone looks, not on the decision path; `overlay` is where it was
# drawn, relative to OUT. Old rows' values are moved out of the blob, then the blob dropped.
_V3_COLUMNS = {
    "captured_at": ("TEXT", "$.time"),  # ISO 8601, local camera time
    "time_source": ("TEXT", "$.time_source"),  # exif or file (modification time)
    "width": ("INTEGER", "$.width"),  # of the original frame, not of its reduced decode
    "height": ("INTEGER", "$.height"),
    "entropy": ("REAL", "$.entropy"),
    "foreground": ("REAL", "$.foreground"),
    "mask_source": ("TEXT", "$.mask_source"),
    "measure": ("TEXT", "$.measure"),
    "species_guess": ("TEXT", "$.species_guess[0]"),  # the guess head's name, never a label
    "species_guess_p": ("REAL", "$.species_guess[1]"),
    "top_k": ("TEXT", "$.top"),  # JSON [[label, probability], ...]
    "overlay": ("TEXT", "$.overlay"),
    "overlay_data": ("BLOB", None),
}
_SCHEMA_V3 = (
    "".join(
        f"ALTER TABLE frames ADD COLUMN {name} {kind};" for name, (kind, _) in _V3_COLUMNS.items()
    )
    + "UPDATE frames SET "
    + ", ".join(
        f"{name} = json_extract(extra, '{path}')"
        if name != "top_k"
        else f"{name} = json(json_extract(extra, '{path}'))"
        for name, (_, path) in _V3_COLUMNS.items()
        if path
    )
    + " WHERE extra IS NOT NULL;"
    + "ALTER TABLE frames DROP COLUMN extra;"
)

# Migration i upgrades a journal from user_version i to i + 1.
_MIGRATIONS: list[str] = [_SCHEMA_V1, _SCHEMA_V2, _SCHEMA_V3]


class JournalError(Exception):
    """The journal cannot be used (newer schema, corrupt file); the message says what to do."""


class JournalMissingError(JournalError):
    """A reader asked for a journal that is not there (a wrong OUT folder, most likely)."""


class DiskFullError(Exception):
    """No space left in OUT for the journal, a frame, a sidecar or an overlay: nothing was
    committed or moved, so nothing is lost; pause and retry once there is room. Defined here,
    not in edge.sink (which imports this module), as the journal meets a full disk as often
    as the files do."""


def _disk_full(e: sqlite3.Error) -> bool:
    """SQLite's words for ENOSPC: SQLITE_FULL, or the -shm file that could not grow."""
    code = getattr(e, "sqlite_errorcode", None)
    return code is not None and (
        code & 0xFF == sqlite3.SQLITE_FULL or code == sqlite3.SQLITE_IOERR_SHMSIZE
    )


@dataclass(frozen=True, kw_only=True)
class Observed:
    """What a frame showed, beside its decision: one journal column each (see _V3_COLUMNS),
    written with a Decision and read back with its Frame."""

    captured_at: datetime | None = None
    time_source: str | None = None
    width: int | None = None
    height: int | None = None
    entropy: float | None = None
    foreground: float | None = None
    mask_source: str | None = None
    measure: str | None = None
    species_guess: str | None = None
    species_guess_p: float | None = None
    top_k: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Decision(Observed):
    """What the policy decided for one frame (and, from Observed, what the frame showed)."""

    decision: Verdict
    label: str | None = None
    class_index: int | None = None
    softmax: float | None = None
    overmap: float | None = None
    confidence: float | None = None
    reason: str | None = None  # why, for quarantine
    overlay_data: bytes | None = None

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "decision", Verdict(self.decision))
        except ValueError:
            raise ValueError(
                f"decision must be one of {[str(v) for v in Verdict]}, got {self.decision!r}"
            ) from None


@dataclass(frozen=True)
class Frame(Observed):
    """One journal row."""

    id: int
    relpath: str
    camera: str
    size: int
    mtime: float
    sha256: str
    state: str
    seen_at: float
    decided_at: float | None
    done_at: float | None
    label: str | None
    class_index: int | None
    softmax: float | None
    overmap: float | None
    confidence: float | None
    decision: Verdict | None
    reason: str | None
    dest: str | None
    overlay: str | None = None
    has_overlay_data: bool = False  # the bytes are read on demand (Journal.overlay_data)


ANSWERS = ("accept", "label", "empty", "person", "vehicle")


class AnswerRefusedError(Exception):
    """An answer to a frame that is not waiting in the review queue; nothing was recorded."""


class AlreadyAnsweredError(AnswerRefusedError):
    """The frame has an answer already: a frame is answered once."""


@dataclass(frozen=True)
class Answer:
    """One row of the answers table: a person's word on a review frame."""

    id: int
    frame_id: int
    answer: str  # one of ANSWERS
    label: str | None
    decision: str  # tagged or empty
    previous_decision: str
    previous_label: str | None
    who: str
    answered_at: float
    src: str
    dest: str
    state: str  # intent or done
    done_at: float | None


_FRAME_COLUMNS = {f.name for f in fields(Frame)} - {"has_overlay_data"}


# what a Frame is read with: every column but the overlay's bytes, which only drawing it needs
# (a results file rewrite reads every row of a journal of weeks)
_SELECT = (
    "SELECT "
    + ", ".join(sorted(_FRAME_COLUMNS))
    + ", overlay_data IS NOT NULL AS has_overlay_data FROM frames"
)


def _frame(row: dict[str, Any]) -> Frame:
    """A frames row (as _SELECT reads it) as a Frame: text back to types."""
    values = dict(row)
    values["has_overlay_data"] = bool(values["has_overlay_data"])
    if values.get("decision") is not None:
        values["decision"] = Verdict(values["decision"])
    if values.get("captured_at"):
        values["captured_at"] = datetime.fromisoformat(values["captured_at"])
    top = values.get("top_k")
    values["top_k"] = tuple((str(n), float(p)) for n, p in json.loads(top)) if top else ()
    return Frame(**values)


def camera_of(relpath: str) -> str:
    """The first subfolder of a frame's path in the inbox ('' when it sits at the top)."""
    parts = relpath.split("/")
    return parts[0] if len(parts) > 1 else ""


class Journal:
    """The frames table of OUT/journal.sqlite; safe to share between threads (one lock)."""

    def __init__(self, path: str | Path, *, exclusive: bool = False, create: bool = True) -> None:
        """Open or create the journal at `path`.

        `exclusive=True` (the watcher) holds an advisory lock on `path`.lock so that a second
        watcher on the same OUT is refused; the kernel drops it when the process dies, so a
        crash never leaves a stale lock. Readers (summaries) open without it.

        `create=False` (readers): a journal that is not there raises JournalMissingError, and
        nothing is made, not even its folder; a mistyped OUT must not get an empty journal.
        """
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise JournalMissingError(
                f"{self.path.parent}: no {self.path.name} here (is it "
                "the OUT folder of `edge watch`?)"
            )
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd: int | None = None
        if exclusive:
            fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                raise JournalError(f"{self.path} is in use by another watcher") from e
            self._lock_fd = fd
        db, new = None, not self.path.exists()
        try:
            self._db = db = sqlite3.connect(
                self.path if create else f"{self.path.resolve().as_uri()}?mode=rw",
                isolation_level=None,
                check_same_thread=False,
                timeout=30.0,
                uri=not create,
            )
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._migrate()
        except sqlite3.DatabaseError as e:
            if db is not None:
                db.close()  # else its files stay open (OUT's disk cannot be unmounted)
            if self._lock_fd is not None:
                os.close(self._lock_fd)
            if _disk_full(e):  # not a broken journal: it must not be thrown away
                raise DiskFullError(f"no space left opening {self.path} ({e})") from e
            raise JournalError(f"{self.path}: not a usable journal ({e})") from e
        if new:  # the journal's own name (SQLite makes its -wal file's durable itself)
            fsync_dir(self.path.parent)
        self._lock = threading.RLock()

    @classmethod
    def open(cls, out: str | Path, *, exclusive: bool = False, create: bool = True) -> Journal:
        """Open (or create, unless `create=False`) the journal in the output folder `out`."""
        return cls(Path(out) / JOURNAL_NAME, exclusive=exclusive, create=create)

    def _migrate(self) -> None:
        """Bring the schema up to date, one step per transaction. The version is read again
        inside each one: a reader (`edge summary`) opening the journal while the watcher
        creates it waits for it, then finds it made, instead of making it a second time."""
        while (version := self._version()) < SCHEMA_VERSION:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                version = self._version()
                if version < SCHEMA_VERSION:
                    for stmt in _MIGRATIONS[version].split(";"):
                        if stmt.strip():
                            self._db.execute(stmt)
                    self._db.execute(f"PRAGMA user_version={version + 1}")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _version(self) -> int:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise JournalError(
                f"{self.path} has schema {version}, this tool knows {SCHEMA_VERSION}: "
                "upgrade overmap-edge or use another output folder"
            )
        return version

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group several writes into one commit (one fsync); nests as a no-op.

        A commit that fails is rolled back (SQLite may already have done so), never left
        open: later transactions would nest in it and never commit. A full disk raises
        DiskFullError with nothing of the transaction kept.
        """
        with self._lock:
            if self._db.in_transaction:
                yield
                return
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
                self._db.execute("COMMIT")
            except BaseException as e:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                if isinstance(e, sqlite3.Error) and _disk_full(e):
                    raise DiskFullError(f"no space left writing {self.path} ({e})") from e
                raise

    # -- writes -----------------------------------------------------------------------------

    def record_seen(self, relpath: str, size: int, mtime: float, sha256: str) -> int:
        """Record a whole frame; idempotent. Returns the row id (existing or new).

        The same relpath with the same content is the same frame (nothing changes); with other
        content it is a new frame (a new row), whatever the state of the old one.
        """
        relpath = relpath.replace("\\", "/")
        with self.transaction():
            self._db.execute(
                "INSERT OR IGNORE INTO frames (relpath, camera, size, mtime, sha256, state, "
                "seen_at) VALUES (?, ?, ?, ?, ?, 'seen', ?)",
                (relpath, camera_of(relpath), size, mtime, sha256, time.time()),
            )
            row = self._db.execute(
                "SELECT id FROM frames WHERE relpath=? AND sha256=?", (relpath, sha256)
            ).fetchone()
        return int(row[0])

    def record_decision(self, frame_id: int, decision: Decision, dest: str) -> None:
        """Write-ahead intent: the decision and where the frame will go, before it moves.

        Re-deciding a frame that is still `decided` replaces the intent; a terminal frame is
        left alone.
        """
        values = {f.name: getattr(decision, f.name) for f in fields(Decision)}
        values["decision"] = str(decision.decision)
        when = decision.captured_at
        values["captured_at"] = when.isoformat() if when else None
        values["top_k"] = (
            json.dumps([[n, p] for n, p in decision.top_k]) if decision.top_k else None
        )
        names = ", ".join(f"{k}=?" for k in values)
        with self.transaction():
            self._db.execute(
                f"UPDATE frames SET state='decided', decided_at=?, {names}, dest=? "
                "WHERE id=? AND state IN ('seen', 'decided')",
                (time.time(), *values.values(), dest, frame_id),
            )

    def quarantine(self, frame_id: int, reason: str, dest: str) -> None:
        """Write-ahead intent to quarantine (same as a decision 'quarantine' with its reason)."""
        self.record_decision(frame_id, Decision("quarantine", reason=reason), dest)

    def mark_done(self, frame_id: int, dest: str) -> None:
        """The frame lies at `dest` (relative to OUT): `done`, or `quarantined` if so decided."""
        with self.transaction():
            self._db.execute(
                "UPDATE frames SET state=CASE decision WHEN 'quarantine' THEN 'quarantined' "
                "ELSE 'done' END, done_at=?, dest=? WHERE id=?",
                (time.time(), dest, frame_id),
            )

    def mark_deleted(self, frame_id: int) -> None:
        """The sorted file was deleted (an empty past its retention); the row and its decision
        stay, so the summaries still count it, but the results no longer list a missing file."""
        with self.transaction():
            self._db.execute("UPDATE frames SET state='deleted' WHERE id=?", (frame_id,))

    def mark_vanished(
        self, frame_id: int, reason: str = "source vanished before it was placed"
    ) -> None:
        """The journaled bytes disappeared before they were placed (deleted or rewritten)."""
        with self.transaction():
            self._db.execute(
                "UPDATE frames SET state='vanished', done_at=?, reason=? WHERE id=?",
                (time.time(), reason, frame_id),
            )

    # -- reads ------------------------------------------------------------------------------

    def _frames(self, where: str, args: Iterable[Any] = ()) -> list[Frame]:
        """Frames read by `_SELECT` and then `where` (the WHERE, ORDER BY ... clauses)."""
        with self._lock:
            rows = self._db.execute(f"{_SELECT} {where}", tuple(args)).fetchall()
        return [_frame(dict(r)) for r in rows]

    def overlay_data(self, frame_id: int) -> bytes | None:
        """What drawing the frame's overlay needs (edge.overlay.OverlayData), if it was kept."""
        with self._lock:
            row = self._db.execute(
                "SELECT overlay_data FROM frames WHERE id=?", (frame_id,)
            ).fetchone()
        return None if row is None or row[0] is None else bytes(row[0])

    def set_overlay(self, frame_id: int, overlay: str) -> None:
        """The frame's overlay is drawn at `overlay` (relative to OUT)."""
        with self.transaction():
            self._db.execute("UPDATE frames SET overlay=? WHERE id=?", (overlay, frame_id))

    def get(self, frame_id: int) -> Frame | None:
        rows = self._frames("WHERE id=?", (frame_id,))
        return rows[0] if rows else None

    def decided(self, frame_ids: Iterable[int]) -> list[Frame]:
        """Those of `frame_ids` that are `decided` now (placing is their next step), by id."""
        ids = [int(i) for i in frame_ids]
        if not ids:
            return []
        marks = ", ".join("?" * len(ids))
        return self._frames(f"WHERE state='decided' AND id IN ({marks}) ORDER BY id", ids)

    def pending(self, limit: int | None = None, *, after_id: int = 0) -> list[Frame]:
        """Frames not yet in a terminal state, oldest first (what a restart must resume);
        `after_id`: only those journaled after that row (a loop's cursor)."""
        where = "WHERE state IN ('seen', 'decided') AND id > ? ORDER BY id"
        if limit is not None:
            where += f" LIMIT {int(limit)}"
        return self._frames(where, (int(after_id),))

    def frames(self, state: str | None = None) -> list[Frame]:
        if state is None:
            return self._frames("ORDER BY id")
        return self._frames("WHERE state=? ORDER BY id", (state,))

    def is_known(self, relpath: str, size: int, mtime: float) -> bool:
        """True when a row has this path, size and mtime: a rescan can skip it without hashing.

        Pending rows count too: they are resumed from the journal, not from the disk.
        """
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM frames WHERE relpath=? AND size=? AND mtime=? LIMIT 1",
                (relpath.replace("\\", "/"), size, mtime),
            ).fetchone()
        return row is not None

    def find(self, relpath: str, sha256: str) -> Frame | None:
        rows = self._frames("WHERE relpath=? AND sha256=?", (relpath, sha256))
        return rows[0] if rows else None

    def dest_taken(self, dest: str, *, exclude_id: int | None = None) -> bool:
        """True when another row already claims `dest` (relative to OUT)."""
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM frames WHERE dest=? AND id IS NOT ? LIMIT 1", (dest, exclude_id)
            ).fetchone()
        return row is not None

    def counts(self, by: str = "state") -> dict[str, int]:
        """Frame counts grouped by 'state', 'decision', 'label', 'camera' or 'day' (of seen_at,
        local time, YYYY-MM-DD); frames without a value count under ''."""
        exprs = {
            "state": "state",
            "decision": "decision",
            "label": "label",
            "camera": "camera",
            "day": "date(seen_at, 'unixepoch', 'localtime')",
        }
        if by not in exprs:
            raise ValueError(f"by must be one of {sorted(exprs)}, got {by!r}")
        with self._lock:
            rows = self._db.execute(
                f"SELECT COALESCE({exprs[by]}, ''), COUNT(*) FROM frames GROUP BY 1 ORDER BY 1"
            ).fetchall()
        return {str(k): int(n) for k, n in rows}

    # -- answers (edge review) --------------------------------------------------------------

    def review_queue(self) -> list[Frame]:
        """Frames the watcher kept for review and placed, not answered yet, in journal order."""
        return self._frames(
            "WHERE state='done' AND decision='review' AND id NOT IN "
            "(SELECT frame_id FROM answers) ORDER BY id"
        )

    def record_answer(
        self,
        frame_id: int,
        *,
        answer: str,
        label: str | None,
        decision: str,
        who: str,
        dest: str,
    ) -> Answer:
        """Write-ahead intent of a person's answer, before the frame leaves OUT/review.

        The frame's row takes the new decision and `dest` at once, so the destination is
        claimed as the watcher's are (its unique index) and the summaries count the frame
        where it is going; the answers row keeps what the watcher had decided and where the
        frame lay. Raises AlreadyAnsweredError for a frame answered before, AnswerRefusedError
        for one that is not waiting for review (nothing is recorded either way).
        """
        if answer not in ANSWERS:
            raise ValueError(f"answer must be one of {ANSWERS}, got {answer!r}")
        if decision not in ("tagged", "empty"):
            raise ValueError(f"decision must be tagged or empty, got {decision!r}")
        with self.transaction():
            if self.answer_of(frame_id) is not None:
                raise AlreadyAnsweredError(f"frame {frame_id} is answered already")
            f = self.get(frame_id)
            if f is None or f.state != "done" or f.decision != "review" or f.dest is None:
                raise AnswerRefusedError(f"frame {frame_id} is not in the review queue")
            try:
                self._db.execute(
                    "INSERT INTO answers (frame_id, answer, label, decision, previous_decision,"
                    " previous_label, who, answered_at, src, dest) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (
                        frame_id,
                        answer,
                        label,
                        decision,
                        f.decision,
                        f.label,
                        who,
                        time.time(),
                        f.dest,
                        dest,
                    ),
                )
                self._db.execute(
                    "UPDATE frames SET decision=?, dest=? WHERE id=?", (decision, dest, frame_id)
                )
            except sqlite3.IntegrityError as e:  # another writer claimed it meanwhile
                raise AnswerRefusedError(f"frame {frame_id}: {dest} is taken ({e})") from e
        found = self.answer_of(frame_id)
        assert found is not None
        return found

    def finish_answer(self, answer_id: int, dest: str) -> None:
        """The answered frame lies at `dest` (relative to OUT), its sidecar written."""
        with self.transaction():
            row = self._db.execute(
                "SELECT frame_id FROM answers WHERE id=?", (answer_id,)
            ).fetchone()
            if row is None:
                raise ValueError(f"no answer {answer_id}")
            self._db.execute(
                "UPDATE answers SET state='done', done_at=?, dest=? WHERE id=?",
                (time.time(), dest, answer_id),
            )
            self._db.execute("UPDATE frames SET dest=? WHERE id=?", (dest, row[0]))

    def _answers(self, sql: str, args: Iterable[Any] = ()) -> list[Answer]:
        with self._lock:
            rows = self._db.execute(sql, tuple(args)).fetchall()
        return [Answer(**dict(r)) for r in rows]

    def answers(self, state: str | None = None) -> list[Answer]:
        """Every answer (or those in `state`: 'intent' are moves a crash cut short)."""
        if state is None:
            return self._answers("SELECT * FROM answers ORDER BY id")
        return self._answers("SELECT * FROM answers WHERE state=? ORDER BY id", (state,))

    def answer_of(self, frame_id: int) -> Answer | None:
        rows = self._answers("SELECT * FROM answers WHERE frame_id=?", (frame_id,))
        return rows[0] if rows else None
