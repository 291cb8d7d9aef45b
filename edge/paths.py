"""Paths inside OUT: the one rule for what may be read or written under the output folder, by
the review page (whose paths come from the network), the overlays drawn on demand, and the
commands that read OUT."""

from __future__ import annotations

import os
from pathlib import Path


def resolve_inside(root: Path, rel: str, *, under: tuple[str, ...] = ()) -> Path | None:
    """OUT/rel as a real path, or None when it would leave `root`: an absolute path, a `..`
    part, a backslash, a NUL, a symlink (anywhere on the way) that leads out of `root`, or
    (with `under`) a path whose first part is not one of those folders. Only regular files.

    The URL is decoded before it gets here (so `%2e%2e%2f` is `../` by now); the checks are
    on the decoded text and again on the real path, so neither spelling nor links get out.
    """
    if not rel or "\x00" in rel or "\\" in rel or rel.startswith("/") or os.path.isabs(rel):
        return None
    parts = rel.split("/")  # as written: PurePosixPath would drop "." and "//" silently
    if any(p in ("..", ".", "") for p in parts) or (under and parts[0] not in under):
        return None
    real_root = root.resolve()
    try:
        real = (real_root / rel).resolve(strict=True)
    except (OSError, RuntimeError):  # missing, or a symlink loop
        return None
    base = real_root / parts[0] if under else real_root  # lexical: a linked folder is out
    if not real.is_relative_to(base) or not real.is_file():
        return None
    return real
