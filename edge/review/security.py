"""What keeps the review page safe on a field network: paths that stay inside OUT, the access
token, sessions and their CSRF tokens, and which Host names a loopback server answers.

Kept apart from the routes so that each rule is a small function a test can call by hand.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import threading
from collections import OrderedDict
from pathlib import Path

SESSION_COOKIE = "edge_review_session"
CSRF_HEADER = "x-csrf-token"
TOKEN_HEADER = "x-edge-token"
LOOPBACK_NAMES = ("localhost",)
MAX_SESSIONS = 256  # browsers (and scripts) that opened the page since the server started


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and 'localhost': only this machine can reach the server."""
    if host.strip("[]") in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts(host: str, port: int) -> set[str] | None:
    """The Host headers a loopback server accepts (None: any, for one reachable from the
    network, where the token is what guards it). A page on another site that makes its own
    name resolve to 127.0.0.1 (DNS rebinding) sends its own name as Host and is refused."""
    if not is_loopback(host):
        return None
    names = {"127.0.0.1", "localhost", "[::1]", host if ":" not in host else f"[{host}]"}
    return {f"{n}:{port}" for n in names} | (names if port == 80 else set())


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


class Sessions:
    """Browser sessions in memory: session id -> CSRF token. A restart of the server ends
    them all (the page then asks for the address with the token again)."""

    def __init__(self, limit: int = MAX_SESSIONS) -> None:
        self._csrf: OrderedDict[str, str] = OrderedDict()
        self._limit = limit
        self._lock = threading.Lock()

    def new(self) -> tuple[str, str]:
        """A fresh (session id, CSRF token); the oldest session goes past `limit`."""
        sid, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        with self._lock:
            self._csrf[sid] = csrf
            while len(self._csrf) > self._limit:
                self._csrf.popitem(last=False)
        return sid, csrf

    def csrf(self, sid: str | None) -> str | None:
        """The session's CSRF token, None for an unknown session."""
        if not sid:
            return None
        with self._lock:
            return self._csrf.get(sid)


def same(a: str | None, b: str | None) -> bool:
    """Constant-time equality of two secrets; False when either is missing."""
    return bool(a) and bool(b) and secrets.compare_digest(str(a), str(b))
