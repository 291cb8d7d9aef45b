"""The last stage: put a frame in its folder under OUT, atomically and idempotently.

`place` may be called again for a frame after a crash at any instant and it finishes the job
without losing or duplicating the frame: a destination that already holds the same bytes means
the move happened; a destination holding other bytes gets a name suffixed with the frame's
content hash (deterministic, so a retry finds it again). Files are written to a hidden temp
file in the destination folder, fsynced, then renamed into place; folders are fsynced after a
rename so that the rename survives a power cut.

The sink only moves: `commit_decisions` writes each decision and its destination to the
journal before any file moves (write-ahead intent), `place_decided` moves the decided frames
and marks them done. What drives them, batch after batch, is edge.loop.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

# DiskFullError (ENOSPC, EDQUOT: pause and retry, nothing was lost) is the journal's and the
# sink's alike: raised here for frames and sidecars, there for commits; import it from either
from edge.durable import fsync_dir, is_disk_full, make_dirs
from edge.hashing import file_sha256  # named here too: callers import it from the sink
from edge.journal import Decision, DiskFullError, Frame, Journal, Verdict

log = logging.getLogger(__name__)

TEMP_SUFFIX = ".edge-tmp"
FOLDERS: dict[str, str] = {v: str(v) for v in Verdict}  # a decision's folder under OUT
_CHUNK = 1 << 20


class SinkError(Exception):
    """A frame could not be placed; the source is untouched."""


class SinkPermissionError(SinkError):
    """A file or folder cannot be written or removed; `path` says which."""

    def __init__(self, path: Path, detail: str = "") -> None:
        super().__init__(f"permission denied: {path}{': ' + detail if detail else ''}")
        self.path = path


class SourceMissingError(SinkError):
    """The original is gone and no destination holds its bytes."""


class SourceChangedError(SinkError):
    """The original's bytes are not those the journal recorded (rewritten in the inbox)."""


class SourceUnreadableError(SinkError):
    """The original cannot be read (permission denied, I/O error): it stays where it is (not
    journaled, or journaled but not placed) until it is readable; `path` says which."""

    def __init__(self, path: Path, detail: str = "") -> None:
        super().__init__(f"cannot read {path}{': ' + detail if detail else ''}")
        self.path = path


def _hash_source(path: Path) -> str:
    """file_sha256 of an inbox file; a read error is the source's, not the output's."""
    try:
        return file_sha256(path)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise SourceUnreadableError(path, e.strerror or str(e)) from e


# -- test hook ------------------------------------------------------------------------------

_hits: dict[str, int] = {}


def crash_point(name: str) -> None:
    """Exit at once (as a power cut would) when EDGE_CRASH_AT names this step.

    EDGE_CRASH_AT=step or step:k (the k-th time the step is reached). Used by the crash tests
    to stop between any two steps; costs one dict lookup otherwise.
    """
    spec = os.environ.get("EDGE_CRASH_AT")
    if not spec:
        return
    step, _, k = spec.partition(":")
    if step != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= int(k or 1):
        os._exit(77)


# -- files ----------------------------------------------------------------------------------


def _rename(src: Path, dst: Path) -> None:
    """os.replace, for filesystems without hard links (FAT)."""
    os.replace(src, dst)


def _link(src: Path, dst: Path) -> None:
    """os.link; a seam the tests patch to act as if src and dst were on two filesystems."""
    os.link(src, dst)


_NO_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS}


def _candidates(dest: Path, sha256: str | None) -> Iterator[Path]:
    """dest, then dest suffixed with the content hash, then numbered: deterministic names."""
    yield dest
    if sha256:
        base = f"{dest.stem}__{sha256[:8]}"
        yield dest.with_name(base + dest.suffix)
        for i in range(1, 100):
            yield dest.with_name(f"{base} ({i}){dest.suffix}")


def _same_content(path: Path, size: int, sha256: str) -> bool:
    try:
        return path.stat().st_size == size and file_sha256(path) == sha256
    except OSError:
        return False


def _raise_mapped(e: OSError, path: Path) -> None:
    if is_disk_full(e):
        raise DiskFullError(f"no space left writing {path}") from e
    if isinstance(e, PermissionError) or e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        raise SinkPermissionError(Path(e.filename or path), e.strerror or "") from e
    raise e


def _sync(folders: Iterable[Path], dirty: set[Path] | None) -> None:
    """fsync folders now, or leave them in `dirty` for the caller to fsync once per batch."""
    if dirty is None:
        for f in folders:
            fsync_dir(f)
    else:
        dirty.update(folders)


def fsync_dirs(dirty: Iterable[Path]) -> None:
    """fsync each folder once."""
    for f in set(dirty):
        fsync_dir(f)


def _copy_atomic(src: Path, dst: Path, dirty: set[Path] | None) -> None:
    """Copy src to dst through a hidden temp file in dst's folder: dst is whole or absent."""
    tmp = dst.with_name(f".{dst.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
    try:
        with open(src, "rb") as fi, open(tmp, "xb") as fo:
            while chunk := fi.read(_CHUNK):
                fo.write(chunk)
            fo.flush()
            os.fsync(fo.fileno())
        st = src.stat()
        try:
            os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
        except OSError:
            pass
        crash_point("copy_before_rename")
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _sync([dst.parent], dirty)


def place(
    src: str | Path,
    dest: str | Path,
    *,
    copy: bool,
    sha256: str | None = None,
    dirty: set[Path] | None = None,
    later: list[Path] | None = None,
) -> Path:
    """Move (or copy) `src` to `dest` and return where it now lies; safe to call again.

    - src gone, a candidate destination holds `sha256`'s bytes: the move was done; return it.
    - src and a candidate hold the same bytes: finish (remove src when moving).
    - dest holds other bytes: use `stem__<sha8>.ext` (then `stem__<sha8> (n).ext`).
    Raises DiskFullError (ENOSPC, EDQUOT) and SinkPermissionError with the source untouched
    and no temp file left, SourceMissingError when the bytes are nowhere, SourceChangedError
    when src no longer holds `sha256` (the journaled hash, checked when given),
    SourceUnreadableError when src cannot be read (nothing is done).
    A move never leaves a moment when a power cut could lose the frame: its new name is made
    durable before its old one goes (see `_move`).
    `dirty` and `later`, given together: the folders to make durable are added to `dirty` and
    the sources to remove to `later`, instead of fsyncing and unlinking at once; call
    `finish_moves(dirty, later)` before recording the frames done (one fsync per folder per
    batch instead of two per frame).
    """
    src, dest = Path(src), Path(dest)
    if (dirty is None) != (later is None):
        raise ValueError("give dirty and later together (see finish_moves), or neither")
    if not src.exists():
        for cand in _candidates(dest, sha256):
            if cand.exists() and (sha256 is None or file_sha256(cand) == sha256):
                return cand
        raise SourceMissingError(f"{src} is gone and {dest} does not hold it")
    sha = _hash_source(src)
    try:
        if sha256 is not None and sha != sha256:
            raise SourceChangedError(f"{src} changed since it was journaled")
        size = src.stat().st_size
        new = make_dirs(dest.parent, durable=False)
        _sync([d.parent for d in new], dirty)  # a new folder is durable once its parent is
        for cand in _candidates(dest, sha):
            if cand.exists():
                if not _same_content(cand, size, sha):
                    continue
                if not copy and _two_names(src, cand):  # a move cut short: finish it
                    crash_point("dedupe_before_unlink")
                    _sync([cand.parent], dirty)
                    _remove_source(src, dirty, later)
                return cand
            if copy:
                _copy_atomic(src, cand, dirty)
            else:
                _move(src, cand, dirty, later)
            return cand
    except OSError as e:
        _raise_mapped(e, dest)
    raise SinkError(f"no free name for {dest} after 100 tries")


def _move(src: Path, dst: Path, dirty: set[Path] | None, later: list[Path] | None) -> None:
    """Give the frame its new name, make that durable, then remove the old one.

    A rename changes two folders, and the source's folder may be made durable first (by
    anyone's fsync of it: the camera writing its next frame); a power cut then would leave
    the frame in neither. So: a hard link, the destination's folder fsynced, then the unlink
    (a copy instead of the link across filesystems). Only where there are no hard links (FAT)
    is it one rename, the filesystem's own guarantee.
    """
    crash_point("move_before_rename")
    try:
        _link(src, dst)
    except OSError as e:
        if e.errno == errno.EXDEV:
            _copy_atomic(src, dst, dirty)
        elif e.errno in _NO_LINKS:
            _rename(src, dst)
            _sync([dst.parent, src.parent], dirty)
            return
        else:
            raise
    _sync([dst.parent], dirty)
    _remove_source(src, dirty, later)


def _two_names(src: Path, cand: Path) -> bool:
    """True when src may go because cand holds the frame under another name: other bytes
    alike, or the same file twice linked; not one file reached by two spellings (FAT)."""
    if not os.path.samefile(src, cand):
        return True
    return os.stat(src).st_nlink > 1 and os.path.normcase(src) != os.path.normcase(cand)


def _remove_source(src: Path, dirty: set[Path] | None, later: list[Path] | None) -> None:
    """Unlink the moved frame's old name now (its new name already durable), or leave it for
    `finish_moves` when the caller batches the fsyncs."""
    if later is not None:
        later.append(src)
        return
    crash_point("move_before_unlink")
    src.unlink(missing_ok=True)
    _sync([src.parent], dirty)


def finish_moves(dirty: set[Path], later: list[Path]) -> None:
    """Complete a batch of moves in the only safe order: the folders the frames went into
    (and any others touched) durable, then the old names removed, then their folders durable."""
    fsync_dirs(dirty)
    dirty.clear()
    for src in later:
        crash_point("move_before_unlink")
        try:
            src.unlink(missing_ok=True)
        except OSError as e:  # both names stay; the next call finds them and finishes
            _raise_mapped(e, src)
        dirty.add(src.parent)
    later.clear()
    fsync_dirs(dirty)
    dirty.clear()


def sidecar(dest: str | Path, data: dict[str, Any], *, durable: bool = True) -> Path:
    """Write `data` as JSON next to a placed frame (`IMG_1.jpg` -> `IMG_1.jpg.json`), atomically.

    `durable=False` skips the fsync (6 ms a file on a plain disk): a power cut may then leave
    the sidecar empty, which is acceptable where the journal holds the same data.
    """
    dest = Path(dest)
    path = dest.with_name(dest.name + ".json")
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
    try:
        with open(tmp, "x", encoding="utf-8") as f:
            json.dump(data, f, indent=1, ensure_ascii=False, default=str)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        _raise_mapped(e, path)
    return path


def clean_temps(out: str | Path) -> int:
    """Remove temp files a crash left under `out` (only ours: `.*.edge-tmp`); returns how many."""
    n = 0
    for dirpath, _dirs, files in os.walk(out):
        for name in files:
            if name.startswith(".") and name.endswith(TEMP_SUFFIX):
                Path(dirpath, name).unlink(missing_ok=True)
                n += 1
    return n


# -- the journal-driven loop ----------------------------------------------------------------


def unwritable(out: Path) -> Path | None:
    """The first place in OUT the watcher may not write (None: all writable).

    Checked before the models load: a permission problem there is a clear error naming the
    path, where it would otherwise be a traceback (the journal) or, with --once, a pause that
    retries forever (a sorted folder). Only what `edge watch` writes is checked: OUT (or its
    nearest existing parent), the journal's files and the folders frames, overlays and
    results go in.
    """
    from edge.journal import JOURNAL_NAME

    rw, wx = os.R_OK | os.W_OK, os.W_OK | os.X_OK
    if not out.exists():
        parent = next(p for p in out.parents if p.exists())
        return None if os.access(parent, wx) else parent
    if not os.access(out, wx):
        return out
    for suffix in ("", "-wal", "-shm", ".lock"):
        f = out / f"{JOURNAL_NAME}{suffix}"
        if f.exists() and not os.access(f, rw):
            return f
    for sub in (*FOLDERS.values(), "overlays", "results"):
        for folder, _dirs, _files in os.walk(out / sub):
            if not os.access(folder, wx):
                return Path(folder)
    return None


def choose_dest(journal: Journal, out: Path, folder: str, frame: Frame) -> str:
    """Destination relative to OUT: folder/relpath, or suffixed with the hash when taken."""
    rel = f"{folder}/{frame.relpath}"
    path = out / rel
    if not journal.dest_taken(rel, exclude_id=frame.id) and (
        not path.exists() or _same_content(path, frame.size, frame.sha256)
    ):
        return rel
    for cand in list(_candidates(path, frame.sha256))[1:]:
        crel = cand.relative_to(out).as_posix()
        if not journal.dest_taken(crel, exclude_id=frame.id) and not cand.exists():
            return crel
    raise SinkError(f"no free name for {rel}")


def admit(
    journal: Journal,
    inbox: Path,
    out: Path,
    path: Path,
    *,
    quarantine_reason: str | None = None,
) -> int | None:
    """Journal a whole frame as `seen` (or its quarantine intent); None if already known.

    Frames already known by path, size and mtime are skipped without hashing, which keeps a
    rescan of a card of done frames (copy mode) cheap. A frame that cannot be read (permission
    denied) raises SourceUnreadableError and is not journaled: its bytes cannot be hashed,
    moved safely or copied, so it stays in the inbox and is taken once it is readable.
    """
    relpath = path.relative_to(inbox).as_posix()
    st = path.stat()
    if quarantine_reason is None and journal.is_known(relpath, st.st_size, st.st_mtime):
        return None
    frame_id = journal.record_seen(relpath, st.st_size, st.st_mtime, _hash_source(path))
    crash_point("after_seen")
    if quarantine_reason is not None:
        frame = journal.get(frame_id)
        if frame is not None and frame.state == "seen":
            dest = choose_dest(journal, out, FOLDERS[Verdict.QUARANTINE], frame)
            journal.quarantine(frame_id, quarantine_reason, dest)
    return frame_id


SIDECAR_KEYS = (
    "relpath", "camera", "sha256", "decision", "label", "class_index", "softmax", "overmap",
    "confidence", "reason", "captured_at", "time_source", "width", "height", "entropy",
    "foreground", "mask_source", "measure", "species_guess", "species_guess_p", "top_k",
)  # fmt: skip


def _sidecar_data(frame: Frame) -> dict[str, Any]:
    """The journal row beside the frame, for a person or a tool that finds the file alone."""
    data = {k: getattr(frame, k) for k in SIDECAR_KEYS}
    data["decision"] = str(frame.decision) if frame.decision else None
    data["captured_at"] = frame.captured_at.isoformat() if frame.captured_at else None
    data["top_k"] = [list(t) for t in frame.top_k]
    return data


def commit_decisions(
    journal: Journal, out: Path, rows: Iterable[Frame], decisions: Iterable[Decision | None]
) -> None:
    """Journal each decision with the destination it will be placed at, in one transaction
    (the intent, before anything moves); None leaves its row pending."""
    with journal.transaction():
        for r, d in zip(rows, decisions, strict=True):
            if d is not None:
                journal.record_decision(r.id, d, choose_dest(journal, out, FOLDERS[d.decision], r))
    crash_point("after_decision")


def place_decided(
    journal: Journal,
    inbox: Path,
    out: Path,
    rows: Iterable[Frame],
    *,
    copy: bool = False,
    sidecars: bool = True,
) -> int:
    """Move (or copy) every one of `rows` that is decided to its destination, then mark them
    done in one transaction once the moves are durable; returns how many were placed.

    A source gone or changed since it was journaled is marked vanished; one unreadable now is
    left pending. DiskFullError and SinkPermissionError propagate after the frames already
    placed are marked done."""
    decided = journal.decided(r.id for r in rows)
    placed: list[tuple[int, str]] = []
    dirty: set[Path] = set()
    later: list[Path] = []
    try:
        for f in decided:
            assert f.dest is not None
            try:
                where = place(
                    inbox / f.relpath,
                    out / f.dest,
                    copy=copy,
                    sha256=f.sha256,
                    dirty=dirty,
                    later=later,
                )
            except (SourceMissingError, SourceChangedError) as e:
                # the journaled bytes are gone; new bytes under that name are a new frame
                log.warning("%s: %s", f.relpath, e)
                journal.mark_vanished(f.id, str(e))
                continue
            except SourceUnreadableError as e:
                # readable when journaled, not now: left pending, placed once readable
                log.error("%s; left in the inbox", e)
                continue
            crash_point("after_place")
            if sidecars:
                sidecar(where, _sidecar_data(f), durable=False)  # the journal is the truth
            placed.append((f.id, where.relative_to(out).as_posix()))
    finally:
        finish_moves(dirty, later)  # the moves are durable before the journal says done
        with journal.transaction():
            for frame_id, rel in placed:
                journal.mark_done(frame_id, rel)
        crash_point("after_done")
    return len(placed)
