"""A person's answer to review frames, applied exactly once and as durably as the watcher's
own moves.

The order is the watcher's: the answers (who, when, the label, the decision it replaces) and
each frame's new destination are committed in one transaction first (write-ahead intent);
then each frame leaves OUT/review through edge.sink.place (a hard link, the destination's
folder fsynced, then the unlink), its sidecar is rewritten next to it with the person's label,
and the answer is marked done. A crash anywhere in between leaves an answer in `intent`, which
`finish_pending` completes (at the next start, or before the next answer is applied).
"""

from __future__ import annotations

import logging
import threading
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge.durable import fsync_dir
from edge.journal import (
    ANSWERS,
    AlreadyAnsweredError,
    Answer,
    AnswerRefusedError,
    Journal,
    Verdict,
)
from edge.review.queue import REVIEW, is_empty_label, waiting
from edge.sink import FOLDERS, SinkError, _sidecar_data, choose_dest, place, sidecar

log = logging.getLogger(__name__)

PERSON_LABEL, VEHICLE_LABEL = "human", "vehicle"
MAX_TEXT = 64
_FINISH = threading.Lock()  # one thread moves answered frames at a time


@dataclass(frozen=True)
class Applied:
    """What an answer did to one frame."""

    frame_id: int
    answer: str
    label: str | None
    decision: str
    dest: str  # relative to OUT


def clean_text(text: str | None, what: str) -> str:
    """A label or a name as typed: trimmed, 1..64 printable characters (ValueError if not)."""
    text = unicodedata.normalize("NFC", (text or "").strip())
    if not text or len(text) > MAX_TEXT:
        raise ValueError(f"{what}: 1 to {MAX_TEXT} characters")
    if any(unicodedata.category(ch).startswith("C") for ch in text):
        raise ValueError(f"{what}: no control characters")
    return text


def outcome(
    answer: str,
    machine_label: str | None,
    label: str | None = None,
    *,
    empty_classes: tuple[str, ...] = (),
) -> tuple[str | None, str]:
    """(label, decision) for an answer: accept keeps the model's label, `label` takes the
    person's, person and vehicle their own words; a label meaning "empty" sorts as empty."""
    if answer not in ANSWERS:
        raise ValueError(f"answer must be one of {', '.join(ANSWERS)}, got {answer!r}")
    if answer == "empty":
        return None, Verdict.EMPTY
    chosen = {
        "accept": machine_label,
        "person": PERSON_LABEL,
        "vehicle": VEHICLE_LABEL,
        "label": clean_text(label, "label") if answer == "label" else None,
    }[answer]
    if is_empty_label(chosen, empty_classes):
        return chosen, Verdict.EMPTY
    return chosen, Verdict.TAGGED


def answer_frames(
    journal: Journal,
    out: Path,
    frame_ids: Sequence[int],
    answer: str,
    *,
    who: str,
    label: str | None = None,
    empty_classes: tuple[str, ...] = (),
) -> list[Applied]:
    """Answer frames (one, or a whole burst) and move them out of OUT/review.

    All or nothing at the door: if any frame is answered already (AlreadyAnsweredError) or
    not waiting in the review queue (AnswerRefusedError), nothing is recorded or moved.
    ValueError for an unknown answer or a bad label.
    """
    if not frame_ids:
        raise ValueError("no frame to answer")
    who = clean_text(who, "name")
    finish_pending(journal, out)  # what a crash left half done comes first
    intents: list[Answer] = []
    with journal.transaction():  # BEGIN IMMEDIATE: one writer at a time, across processes
        queue = {f.id: f for f in waiting(journal, out)}
        for fid in dict.fromkeys(frame_ids):
            if journal.answer_of(fid) is not None:
                raise AlreadyAnsweredError(f"frame {fid} is answered already")
            if fid not in queue:
                raise AnswerRefusedError(f"frame {fid} is not in the review queue")
        for fid in dict.fromkeys(frame_ids):
            f = queue[fid]
            new_label, decision = outcome(answer, f.label, label, empty_classes=empty_classes)
            dest = choose_dest(journal, out, FOLDERS[decision], f)
            intents.append(
                journal.record_answer(
                    fid, answer=answer, label=new_label, decision=decision, who=who, dest=dest
                )
            )
    return [_finish(journal, out, a) for a in intents]


def finish_pending(journal: Journal, out: Path) -> int:
    """Complete the answers a crash cut short (journaled, not yet moved); returns how many.
    One that cannot be completed now (its frame is nowhere) is logged and left for later."""
    n = 0
    for a in journal.answers(state="intent"):
        try:
            _finish(journal, out, a)
            n += 1
        except SinkError as e:
            log.error("answer to frame %d not finished: %s", a.frame_id, e)
    return n


def _finish(journal: Journal, out: Path, a: Answer) -> Applied:
    """Move the frame (idempotent: a second call finds it moved) and write its sidecar."""
    with _FINISH:
        current = next((x for x in journal.answers(state="intent") if x.id == a.id), None)
        if current is None:  # another thread finished it meanwhile
            done = journal.answer_of(a.frame_id)
            assert done is not None
            return Applied(a.frame_id, a.answer, a.label, a.decision, done.dest)
        frame = journal.get(a.frame_id)
        assert frame is not None
        where = place(out / a.src, out / a.dest, copy=False, sha256=frame.sha256)
        rel = where.relative_to(out).as_posix()
        data: dict[str, Any] = _sidecar_data(frame) | {
            "label": a.label,
            "decision": a.decision,
            "classification_method": "human",
            "answer": a.answer,
            "answered_by": a.who,
            "answered_at": datetime.fromtimestamp(a.answered_at, UTC).isoformat(),
            "machine_label": a.previous_label,
            "machine_decision": a.previous_decision,
        }
        sidecar(where, data)  # fsynced; its name made durable with the folder's fsync below
        fsync_dir(where.parent)
        old = out / f"{a.src}.json"
        if old != where.with_name(where.name + ".json") and old.parent.is_relative_to(out / REVIEW):
            old.unlink(missing_ok=True)
            fsync_dir(old.parent)
        journal.finish_answer(a.id, rel)
        return Applied(a.frame_id, a.answer, a.label, a.decision, rel)
