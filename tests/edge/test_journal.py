"""The journal: schema, idempotent writes, states, counts, persistence across reopen."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from edge.journal import _SCHEMA_V1 as JOURNAL_SCHEMA
from edge.journal import SCHEMA_VERSION, Decision, Journal, JournalError, camera_of


def test_created_in_wal_with_schema_version(tmp_path: Path) -> None:
    with Journal.open(tmp_path) as j:
        assert j.schema_version == SCHEMA_VERSION
        assert j._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert j._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert (tmp_path / "journal.sqlite").exists()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    Journal.open(tmp_path).close()
    db = sqlite3.connect(tmp_path / "journal.sqlite")
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(JournalError, match="upgrade"):
        Journal.open(tmp_path)


def test_not_a_database_is_refused(tmp_path: Path) -> None:
    (tmp_path / "journal.sqlite").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(JournalError):
        Journal.open(tmp_path)


def test_record_seen_is_idempotent_and_new_content_is_a_new_frame(tmp_path: Path) -> None:
    with Journal.open(tmp_path) as j:
        a = j.record_seen("cam1/IMG_0001.JPG", 100, 1.5, "aa" * 32)
        assert j.record_seen("cam1/IMG_0001.JPG", 100, 1.5, "aa" * 32) == a
        j.record_decision(a, Decision("empty"), "empty/cam1/IMG_0001.JPG")
        j.mark_done(a, "empty/cam1/IMG_0001.JPG")
        # a new card reuses the name with other bytes: a second frame, both kept
        b = j.record_seen("cam1/IMG_0001.JPG", 120, 9.0, "bb" * 32)
        assert b != a
        assert [f.state for f in j.frames()] == ["done", "seen"]
        assert [f.id for f in j.pending()] == [b]
        c = j.record_seen("cam1/IMG_0002.JPG", 90, 3.0, "cc" * 32)
        assert [f.id for f in j.pending(after_id=b)] == [c]
        assert [f.id for f in j.pending(limit=1)] == [b]
        assert j.is_known("cam1/IMG_0001.JPG", 100, 1.5)
        assert not j.is_known("cam1/IMG_0001.JPG", 100, 2.5)


def test_states_decision_fields_and_reopen(tmp_path: Path) -> None:
    with Journal.open(tmp_path) as j:
        a = j.record_seen("cam1/a.jpg", 1, 1.0, "a" * 64)
        b = j.record_seen("cam2/b.jpg", 2, 2.0, "b" * 64)
        c = j.record_seen("top.jpg", 3, 3.0, "c" * 64)
        d = Decision(
            "tagged",
            label="deer",
            class_index=3,
            softmax=0.9,
            overmap=0.2,
            confidence=0.8,
            measure="overlap",
            mask_source="segmenter",
            top_k=(("deer", 0.9), ("fox", 0.05)),
        )
        j.record_decision(a, d, "tagged/cam1/a.jpg")
        j.quarantine(b, "truncated JPEG", "quarantine/cam2/b.jpg")
        assert j.dest_taken("tagged/cam1/a.jpg")
        assert not j.dest_taken("tagged/cam1/a.jpg", exclude_id=a)
        j.mark_done(a, "tagged/cam1/a.jpg")
        j.mark_done(b, "quarantine/cam2/b.jpg")
        # a terminal frame is not re-decided
        j.record_decision(a, Decision("empty"), "empty/cam1/a.jpg")
    with Journal.open(tmp_path) as j:
        fa, fb, fc = j.get(a), j.get(b), j.get(c)
        assert fa and fb and fc
        assert (fa.state, fa.decision, fa.label, fa.class_index) == ("done", "tagged", "deer", 3)
        assert (fa.measure, fa.mask_source) == ("overlap", "segmenter")
        assert fa.top_k == (("deer", 0.9), ("fox", 0.05))
        assert fa.dest == "tagged/cam1/a.jpg" and fa.done_at and fa.decided_at
        assert (fb.state, fb.decision, fb.reason) == ("quarantined", "quarantine", "truncated JPEG")
        assert fc.state == "seen" and fc.camera == ""
        assert j.counts() == {"done": 1, "quarantined": 1, "seen": 1}
        assert j.counts("decision") == {"": 1, "quarantine": 1, "tagged": 1}
        assert j.counts("camera") == {"": 1, "cam1": 1, "cam2": 1}
        assert j.counts("label") == {"": 2, "deer": 1}
        assert sum(j.counts("day").values()) == 3
        with pytest.raises(ValueError):
            j.counts("colour")


def test_exclusive_open_refuses_a_second_watcher(tmp_path: Path) -> None:
    with Journal.open(tmp_path, exclusive=True):
        with pytest.raises(JournalError, match="in use"):
            Journal.open(tmp_path, exclusive=True)
        with Journal.open(tmp_path) as reader:  # a summary may still read
            assert reader.counts() == {}
    Journal.open(tmp_path, exclusive=True).close()  # released on close


def test_transaction_rolls_back_on_error(tmp_path: Path) -> None:
    with Journal.open(tmp_path) as j:
        with pytest.raises(RuntimeError), j.transaction():
            j.record_seen("a.jpg", 1, 1.0, "a" * 64)
            raise RuntimeError("boom")
        assert j.frames() == []


def test_decision_is_checked() -> None:
    with pytest.raises(ValueError, match="decision"):
        Decision("maybe")
    assert camera_of("cam/x/y.jpg") == "cam" and camera_of("y.jpg") == ""


def test_a_reader_opening_the_journal_as_it_is_created_waits_and_finds_it_made(
    tmp_path: Path,
) -> None:
    """`edge summary` at the moment the watcher creates the journal: the creator has made the
    tables but not yet committed; the reader must wait and then use them, not make them again."""
    import threading

    path = tmp_path / "journal.sqlite"
    creator = sqlite3.connect(path, isolation_level=None)
    creator.execute("PRAGMA journal_mode=WAL")
    creator.execute("BEGIN IMMEDIATE")
    creator.execute("CREATE TABLE frames (id INTEGER PRIMARY KEY)")  # its first statement
    opened: list[object] = []

    def reader() -> None:
        try:
            with Journal(path) as j:
                opened.append(j.schema_version)
        except Exception as e:  # noqa: BLE001 - the test reports it
            opened.append(e)

    t = threading.Thread(target=reader)
    t.start()
    t.join(0.5)
    assert t.is_alive()  # waiting for the creator's transaction
    creator.execute("DROP TABLE frames")  # the real schema, as the watcher's Journal makes it
    for stmt in JOURNAL_SCHEMA.split(";"):
        if stmt.strip():
            creator.execute(stmt)
    creator.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    creator.execute("COMMIT")
    creator.close()
    t.join(30)
    assert opened == [SCHEMA_VERSION]
