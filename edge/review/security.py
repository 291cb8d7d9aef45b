"""What keeps the review page safe on a field network: paths that stay inside OUT, the access
token, sessions and their CSRF tokens, and which Host names a loopback server answers.

Kept apart from the routes so that each rule is a small function a test can call by hand.
"""

from __future__ import annotations

import ipaddress
import secrets
import threading
from collections import OrderedDict

from edge.paths import resolve_inside  # noqa: F401  (the page's rule; edge.paths owns it)

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
