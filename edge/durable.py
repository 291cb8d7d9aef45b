"""Making names survive a power cut: a new file's or folder's name is durable only once the
folder holding it has been fsynced (POSIX promises nothing sooner)."""

from __future__ import annotations

import errno
import os
from pathlib import Path


def is_disk_full(e: BaseException) -> bool:
    """The one test for "no room left" (ENOSPC, or the user's quota, EDQUOT): the watcher
    pauses and retries on it, nothing lost, where any other error is a fault."""
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)


def fsync_dir(path: Path) -> None:
    """Make the creations, renames and unlinks in `path` durable; a no-op where folders
    cannot be opened or fsynced."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems (vfat over FUSE) refuse fsync on folders
    finally:
        os.close(fd)


def make_dirs(path: Path, *, durable: bool = True) -> list[Path]:
    """mkdir -p; returns the folders created, outermost first. `durable`: each new folder is
    made durable in its parent at once (else the caller fsyncs their parents, batched)."""
    path = Path(path)
    new = [d for d in (path, *path.parents) if not d.exists()][::-1]
    path.mkdir(parents=True, exist_ok=True)
    if durable:
        for d in new:  # a folder's name, then what it holds
            fsync_dir(d.parent)
    return new
