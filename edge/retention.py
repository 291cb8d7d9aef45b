"""Retention: frames sorted as empty are deleted once they are older than the period the user
asked for (never by default). The journal keeps their rows, marked deleted."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from edge.journal import Journal, Verdict

log = logging.getLogger("edge.retention")

PURGE_EVERY = 3600.0  # seconds between sweeps while watching


def purge_empties(journal: Journal, out: Path, days: float, *, now: float | None = None) -> int:
    """Delete frames sorted as empty more than `days` ago (and their sidecars); returns how
    many files were deleted. Only ever called when the user asked for a retention period."""
    if days <= 0:
        raise ValueError("the retention period must be positive")
    cutoff = (time.time() if now is None else now) - days * 86400
    n = 0
    with journal.transaction():
        for f in journal.frames(state="done"):
            if f.decision != Verdict.EMPTY or f.dest is None or (f.done_at or cutoff) >= cutoff:
                continue
            path = out / f.dest
            if path.exists():
                path.unlink()
                n += 1
            path.with_name(path.name + ".json").unlink(missing_ok=True)
            journal.mark_deleted(f.id)  # also when a crash came between the unlink and this
    if n:
        log.info("deleted %d empty frames older than %g days", n, days)
    return n
