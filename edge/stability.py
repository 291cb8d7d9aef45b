"""Wait until a new file is whole before the journal sees it.

A camera or a copy tool writes a frame over seconds; reading it early gives a truncated image
that OpenCV may still decode (the missing rows come out grey). So a candidate is whole only
when its size and mtime hold still across two looks `settle` seconds apart, a JPEG ends with its
EOI marker (FF D9), and it decodes. One that never gets there within `give_up` seconds is
handed back as unreadable, with the reason, for quarantine; one that cannot even be opened
(permission denied) cannot be hashed or copied, so `edge.sink.admit` leaves it in the inbox.

The EOI test is for JPEG bytes, not JPEG names: a file named .jpg that does not start with
SOI (FF D8) is no JPEG being written, so there is no marker to wait for. It is judged as any
other format is: a PNG saved as .jpg decodes and is sorted, a text file is quarantined by the
decoder as "not a decodable image", not as a "truncated JPEG".
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge.decode import DecodeError, load_image

JPEG_EXTS = (".jpg", ".jpeg", ".jpe", ".jfif")


SOI, EOI = b"\xff\xd8", b"\xff\xd9"


def jpeg_state(path: str | Path) -> str:
    """What the ends of a file say: 'whole' (SOI ... EOI), 'cut' (SOI without EOI: a JPEG cut
    short or still being written), 'short' (under two bytes, too few to tell) or 'other' (no
    SOI: not a JPEG at all, whatever its name). An OSError goes up to the caller.

    Some cameras pad after EOI with zeros or 0xFF, so trailing padding (up to 4 KiB) is allowed.
    """
    with open(path, "rb") as f:
        head = f.read(2)
        if len(head) < 2:
            return "short"
        if head != SOI:
            return "other"
        f.seek(0, os.SEEK_END)
        size = f.tell()
        n = min(size - 2, 4096)
        f.seek(size - n)
        tail = f.read(n).rstrip(b"\x00\xff")
    # rstrip stops at D9, so the EOI survives; inside entropy-coded data FF is always
    # stuffed (FF 00), so a cut can end in FF D9 only at a real marker.
    return "whole" if tail.endswith(EOI) else "cut"


@dataclass(frozen=True)
class Readiness:
    """What the gate says about a candidate: 'whole', 'unreadable' (with reason) or 'gone'."""

    path: Path
    status: str
    reason: str | None = None


@dataclass
class _Watch:
    size: int
    mtime_ns: int
    first: float
    last: float


class StabilityGate:
    """Holds candidates until they are whole; call `poll()` often, it never blocks.

    `decode=False` skips the full decode (the decide stage decodes and quarantines anyway) and
    keeps only the stable-size and JPEG-EOI tests, which halves decoding work on a slow device;
    a file that is not an image then passes the gate and the decoder quarantines it.
    """

    def __init__(
        self,
        *,
        settle: float = 1.5,
        give_up: float = 60.0,
        decode: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settle = settle
        self.give_up = give_up
        self.decode = decode
        self._clock = clock
        self._watch: dict[Path, _Watch] = {}

    def __len__(self) -> int:
        return len(self._watch)

    def add(self, path: Path) -> None:
        """Start watching `path` (again adding a watched path changes nothing)."""
        if path in self._watch:
            return
        try:
            st = path.stat()
        except OSError:
            return
        now = self._clock()
        self._watch[path] = _Watch(st.st_size, st.st_mtime_ns, now, now)

    def _readable(self, path: Path, size: int) -> str | None:
        """None when whole, else why not; an OSError (permission denied) is the reason.

        The file is opened first in every case, so that one it may not read says so instead
        of reading as a "truncated" JPEG or a whole PNG; for a JPEG that open is jpeg_state's.
        """
        if path.suffix.lower() in JPEG_EXTS:
            state = jpeg_state(path)
        else:
            with open(path, "rb"):
                state = None
        if size == 0:
            return "empty file (0 bytes)"
        if size == 1:  # may still grow into anything: wait, as for an empty one
            return "too short to be an image (1 byte)"
        if state == "cut":
            return "truncated JPEG (no end-of-image marker)"
        # a .jpg without SOI ('other') is no JPEG: no marker to wait for; decoding says what it is
        if self.decode:
            try:
                load_image(path)
            except DecodeError as e:
                return str(e)
        return None

    def poll(self) -> list[Readiness]:
        """Readiness of the candidates that settled (whole), gave up (unreadable) or vanished."""
        now = self._clock()
        out: list[Readiness] = []
        for path, w in list(self._watch.items()):
            if now - w.last < self.settle:
                continue
            try:
                st = path.stat()
            except OSError:
                del self._watch[path]
                out.append(Readiness(path, "gone"))
                continue
            w.last = now
            if (st.st_size, st.st_mtime_ns) != (w.size, w.mtime_ns):
                w.size, w.mtime_ns = st.st_size, st.st_mtime_ns
                continue
            try:
                why = self._readable(path, st.st_size)
            except OSError as e:
                why = f"cannot read: {e.strerror or e}"
            if why is None:
                del self._watch[path]
                out.append(Readiness(path, "whole"))
            elif now - w.first >= self.give_up:
                del self._watch[path]
                out.append(Readiness(path, "unreadable", f"{why} after {self.give_up:g} s"))
        return out
