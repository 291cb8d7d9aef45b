"""The watcher's skeleton loop with a fake decider, run as a process the crash tests kill.

    python crash_driver.py IN OUT [--copy] [--cross-fs] [--once] [--settle S]

Decisions come from a hash of the file name (no models). Without --once it watches IN until
the file IN/../STOP exists and everything is handled, then exits 0. EDGE_CRASH_AT (see
edge.sink.crash_point) makes it exit with 77 at a given step.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import sys
import time
from pathlib import Path

from edge import sink
from edge.discover import Watcher, scan
from edge.journal import Decision, Journal
from edge.loop import drain
from edge.sink import admit, clean_temps
from edge.stability import StabilityGate

LABELS = ("empty", "tagged", "review")


def fake_decide(paths: list[Path]) -> list[Decision]:
    """A deterministic decision from the file name."""
    out = []
    for p in paths:
        k = hashlib.sha256(p.name.encode()).digest()[0] % 3
        out.append(Decision(LABELS[k], label=f"class{k}", class_index=k, softmax=0.5, overmap=0.1))
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("inbox", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--copy", action="store_true")
    ap.add_argument("--cross-fs", action="store_true", help="IN, OUT on two filesystems")
    ap.add_argument("--once", action="store_true", help="handle what is there, then exit")
    ap.add_argument("--settle", type=float, default=0.2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--maxsize", type=int, default=64)
    a = ap.parse_args()

    if a.cross_fs:

        def exdev(src: Path, dst: Path) -> None:
            raise OSError(errno.EXDEV, "Invalid cross-device link", str(src))

        sink._link = exdev  # type: ignore[assignment]

    inbox, out = a.inbox, a.out
    out.mkdir(parents=True, exist_ok=True)
    journal = Journal.open(out, exclusive=True)
    clean_temps(out)
    drain(journal, inbox, out, fake_decide, copy=a.copy, batch=a.batch)

    if a.once:
        for p in scan(inbox, exclude=[out]):
            admit(journal, inbox, out, p)
        drain(journal, inbox, out, fake_decide, copy=a.copy, batch=a.batch)
        return 0

    def known(p: Path, st) -> bool:  # noqa: ANN001
        return journal.is_known(p.relative_to(inbox).as_posix(), st.st_size, st.st_mtime)

    gate = StabilityGate(settle=a.settle, give_up=30.0)
    stop = inbox.parent / "STOP"
    with Watcher(
        inbox, exclude=[out], rescan_interval=1.0, check_interval=0.2, maxsize=a.maxsize, skip=known
    ) as w:
        while True:
            for p in w.get_batch(64, timeout=0.05):
                if p.exists():
                    gate.add(p)
            for v in gate.poll():
                if v.status == "whole":
                    admit(journal, inbox, out, v.path)
                elif v.status == "unreadable":
                    admit(journal, inbox, out, v.path, quarantine_reason=v.reason)
            drain(journal, inbox, out, fake_decide, copy=a.copy, batch=a.batch)
            if stop.exists() and not len(gate) and not len(w.queue) and not journal.pending():
                left = [p for p in scan(inbox, exclude=[out]) if not known(p, p.stat())]
                if not left:
                    break
                for p in left:
                    gate.add(p)
            time.sleep(0.02)
    print(f"high_water={w.queue.high_water} rescans={w.rescans} polling={w.polling}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
