"""Which frames a batch run covers, in which order, cut into chunks with stable ids.

The listing is the driver's only pass over the files: names and `stat`, nothing read. Capture
times (EXIF) are read in Ray tasks (:func:`capture_times`) and brought back to put each
camera's frames in the order they were taken, as `edge watch --once` takes them: background
models and bursts need that order. A chunk is a run of one camera's consecutive frames; its id
hashes what the chunk holds (each frame's path, size, mtime) and the run's settings, so the
same inputs give the same chunks, and a rerun finds the shards it already wrote.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from edge.discover import EXTS, is_candidate_name, scan
from edge.exif import when_taken
from edge.journal import camera_of


class ListingError(ValueError):
    """The input names no frames that can be listed; the message says which and why."""


@dataclass(frozen=True)
class Listed:
    """One frame as listed: `relpath` ('/'-separated, under the run's root) and the identity
    of the file (size, mtime in ns) that a rerun compares. `time`/`time_source` are filled in
    by :func:`capture_times` (ISO text, as the results write it)."""

    relpath: str
    size: int
    mtime_ns: int
    time: str | None = None
    time_source: str | None = None

    @property
    def camera(self) -> str:
        return camera_of(self.relpath)

    @property
    def key(self) -> tuple[str, int, int]:
        """What makes a frame the same frame across runs: its path and its file's identity."""
        return self.relpath, self.size, self.mtime_ns


def _stat(root: Path, path: Path) -> Listed | None:
    try:
        st = path.stat()
    except OSError:
        return None  # vanished since it was named: not a frame of this run
    return Listed(path.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns)


def _from_list_file(list_file: Path) -> tuple[Path, list[Path]]:
    """Paths named one per line (blank lines and '#' comments skipped); relative ones are
    under the list file's folder. The root is that folder, or the deepest folder holding
    every frame when some lie elsewhere."""
    base = list_file.resolve().parent
    paths = []
    for line in list_file.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            p = Path(line)
            paths.append((p if p.is_absolute() else base / p).resolve())
    if not paths:
        raise ListingError(f"{list_file}: names no frames")
    if all(p.is_relative_to(base) for p in paths):
        return base, paths
    return Path(os.path.commonpath([str(p.parent) for p in paths])), paths


def list_frames(source: str | Path, *, exclude: Iterable[Path] = ()) -> tuple[Path, list[Listed]]:
    """(root, frames): a folder tree (one subfolder per camera, as for `edge watch`) or a list
    file of paths. A listed path that is missing or not a frame's name is skipped; the frames
    come sorted by path, each once. Raises ListingError when nothing can be listed."""
    source = Path(source)
    if source.is_dir():
        root = source.resolve()
        paths: list[Path] = list(scan(root, exclude=list(exclude)))
    elif source.is_file():
        root, paths = _from_list_file(source)
        paths = [p for p in paths if p.is_file() and is_candidate_name(p.name)]
    else:
        raise ListingError(f"{source}: no such folder or list file")
    frames = {f.relpath: f for f in (_stat(root, p) for p in paths) if f is not None}
    if not frames:
        kinds = ", ".join(e.lstrip(".") for e in EXTS)
        raise ListingError(f"no frames found in {source} (looked for {kinds} files)")
    return root, [frames[k] for k in sorted(frames)]


def capture_times(root: str, relpaths: Sequence[str]) -> list[tuple[str | None, str | None]]:
    """(time as ISO text, "exif" | "file" | None) for each frame: `edge.exif.when_taken`,
    run in Ray tasks. A file it cannot read has no time (its decode will say why)."""
    out: list[tuple[str | None, str | None]] = []
    for rel in relpaths:
        try:
            t, source = when_taken(Path(root) / rel)
        except Exception:  # noqa: BLE001 - a broken file's time is unknown, never a failed task
            t, source = None, None
        out.append((t.isoformat() if t else None, source))
    return out


def _name_key(relpath: str) -> tuple:
    return tuple(
        (0, int(s), "") if s.isdigit() else (1, 0, s) for s in re.split(r"(\d+)", relpath) if s
    )


def capture_order(frames: Iterable[Listed]) -> list[Listed]:
    """Camera by camera, each camera's frames in the order they were taken, then by name
    with digits as numbers: the order of `edge.watch.capture_order`, on times already read."""

    def key(f: Listed) -> tuple:
        t = datetime.fromisoformat(f.time) if f.time else None
        return f.camera, t is None, t or datetime.min, _name_key(f.relpath)

    return sorted(frames, key=key)


@dataclass(frozen=True)
class Chunk:
    """One actor call's work: `frames` of one camera in capture order, after `warmup`, the
    frames just before them that prime the background model and bursts (scored again, not
    written: each chunk is decided the same whichever actor takes it, in whatever order)."""

    id: str
    camera: str
    frames: tuple[Listed, ...]
    warmup: tuple[Listed, ...] = ()

    def to_json(self) -> str:
        return json.dumps(
            {
                "id": self.id,
                "camera": self.camera,
                "frames": [asdict(f) for f in self.frames],
                "warmup": [asdict(f) for f in self.warmup],
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Chunk:
        d = json.loads(text)
        return cls(
            d["id"],
            d["camera"],
            tuple(Listed(**f) for f in d["frames"]),
            tuple(Listed(**f) for f in d["warmup"]),
        )


def make_chunks(
    ordered: Sequence[Listed], *, size: int, warmup: int, signature: str
) -> list[Chunk]:
    """Cut frames in capture order into chunks of at most `size` frames of one camera, each
    with up to `warmup` frames before it. `signature`: the run's settings (bundle,
    thresholds, ...); a chunk id changes with them, so a shard is never reused under others."""
    if size < 1 or warmup < 0:
        raise ValueError(f"need size >= 1 and warmup >= 0, got {size=}, {warmup=}")
    chunks: list[Chunk] = []
    start = 0
    while start < len(ordered):
        camera = ordered[start].camera
        end = start
        while end < len(ordered) and ordered[end].camera == camera:
            end += 1
        for lo in range(start, end, size):
            frames = tuple(ordered[lo : min(lo + size, end)])
            before = tuple(ordered[max(start, lo - warmup) : lo])
            h = hashlib.sha256(signature.encode())
            for f in (*before, None, *frames):  # None: where the warm-up ends
                h.update(b"|" if f is None else json.dumps(f.key).encode())
            chunks.append(Chunk(h.hexdigest()[:24], camera, frames, before))
        start = end
    return chunks
