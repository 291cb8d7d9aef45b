"""When a frame was taken: EXIF DateTimeOriginal as the camera wrote it, else the file's time.

Camera traps write local time without a zone; it is returned naive, as written.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal

import piexif

_TAGS = (piexif.ExifIFD.DateTimeOriginal, piexif.ExifIFD.DateTimeDigitized)


def exif_time(path: str | Path) -> datetime | None:
    """DateTimeOriginal (or DateTimeDigitized) from the EXIF block, or None."""
    try:
        exif = piexif.load(str(path)).get("Exif", {})
    except Exception:  # piexif raises many kinds on files without (valid) EXIF
        return None
    for tag in _TAGS:
        raw = exif.get(tag)
        if not raw:
            continue
        text = raw.decode("ascii", "ignore").strip("\x00 ")
        try:
            return datetime.strptime(text, "%Y:%m:%d %H:%M:%S")
        except ValueError:
            continue
    return None


def when_taken(path: str | Path) -> tuple[datetime | None, Literal["exif", "file"] | None]:
    """The capture time and where it came from: the EXIF time, else the file's modification
    time (local; a copy without -p sets it to the copying time), else (None, None)."""
    t = exif_time(path)
    if t is not None:
        return t, "exif"
    try:
        return datetime.fromtimestamp(Path(path).stat().st_mtime), "file"
    except OSError:
        return None, None
