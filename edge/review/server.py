"""Starting the review page: settings from the flags, the config and the bundle, the address
printed, uvicorn serving until Ctrl-C, and the results file rewritten after answers."""

from __future__ import annotations

import logging
import secrets
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge.config import Config
from edge.review.app import Settings, create_app
from edge.review.security import is_loopback

log = logging.getLogger(__name__)

RESULTS_EVERY = 5.0  # seconds between rewrites of the results file while answers come in


class ResultsWriter:
    """Rewrites the results file in a thread after answers: at most once every `every`
    seconds however fast answers come, and once more on close if one is due."""

    def __init__(self, write: Callable[[], None], every: float = RESULTS_EVERY) -> None:
        self._write, self._every = write, every
        self._due, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name="edge-review-results", daemon=True)
        self._thread.start()

    def touch(self) -> None:
        self._due.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._due.wait()
            if self._stop.is_set():
                break
            self._due.clear()
            self._safe_write()
            self._stop.wait(self._every)

    def _safe_write(self) -> None:
        try:
            self._write()
        except Exception as e:  # a full disk: the journal has the answers, rewritten later
            log.error("results file not rewritten: %s", e)

    def close(self) -> None:
        due = self._due.is_set()
        self._stop.set()
        self._due.set()
        self._thread.join(timeout=30)
        if due:
            self._safe_write()


@dataclass(frozen=True)
class Address:
    host: str
    port: int
    token: str | None

    def url(self) -> str:
        host = socket.gethostname() if self.host in ("0.0.0.0", "::") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/" + (f"?token={self.token}" if self.token else "")


def address(cfg: Config, host: str | None, port: int | None, token: str | None) -> Address:
    """Flags over the config's [review]; beyond loopback a token is required, made up here
    (and printed) when neither gives one."""
    host = host or cfg.review.host
    token = token or cfg.review.token
    if token is None and not is_loopback(host):
        token = secrets.token_urlsafe(24)
    return Address(host, port or cfg.review.port, token)


def settings_for(
    out: Path, cfg: Config, where: Address, bundle: Path | None, say: Callable[[str], None]
) -> tuple[Settings, ResultsWriter | None]:
    """The app's settings; with a bundle that verifies, its classes are offered as labels and
    the results file is rewritten after answers (without one, by the watcher's next run)."""
    from edge.bundle import BundleError, load_bundle
    from edge.config import resolve_thresholds
    from edge.journal import Journal
    from edge.reports import write_results

    labels, empty, writer = tuple(cfg.taxa), (), None
    if bundle is not None:
        try:
            manifest = load_bundle(bundle).manifest
        except BundleError as e:
            say(f"bundle not used ({e}): the results file is rewritten by the next watch")
        else:
            labels = (*manifest.classifier.classes, *labels)
            empty = tuple(manifest.classifier.empty_classes)
            thresholds = resolve_thresholds(manifest.thresholds, cfg, {})

            def write() -> None:
                with Journal.open(out) as j:
                    write_results(j, out, manifest, thresholds)

            writer = ResultsWriter(write)
    settings = Settings(
        out=out,
        token=where.token,
        host=where.host,
        port=where.port,
        gap_seconds=cfg.triage.burst_gap_seconds,
        max_frames=cfg.triage.burst_max_frames,
        labels=labels,
        empty_classes=empty,
        on_answer=writer.touch if writer else None,
    )
    return settings, writer


def serve(
    out: Path, cfg: Config, where: Address, bundle: Path | None, say: Callable[[str], None]
) -> None:
    """Serve until Ctrl-C (uvicorn's own handling), then write the results once more."""
    import uvicorn

    settings, writer = settings_for(out.resolve(), cfg, where, bundle, say)
    app = create_app(settings)
    say(f"review queue: {where.url()}  (Ctrl-C to stop)")
    if where.token and is_loopback(where.host):
        say("the token is required: open the address above once, the browser keeps a cookie")
    try:
        uvicorn.run(app, host=where.host, port=where.port, log_level="warning", access_log=False)
    finally:
        if writer is not None:
            writer.close()
