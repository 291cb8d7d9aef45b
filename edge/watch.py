"""`edge watch`: every frame that lands in the inbox is classified, scored and sorted, once.

This module is the command's frame: the options, signals (Ctrl-C, SIGTERM stop after the batch
at hand), logging for a service, and what is printed at the end. The loop itself, stage by
stage, is edge.loop; the dashboard and the progress bar are edge.tui's.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.bundle import Bundle
from edge.config import Config
from edge.discover import EXTS
from edge.durable import make_dirs
from edge.journal import Verdict
from edge.loop import capture_order, inference_threads, run_forever, run_once
from edge.reports import MD_RESULTS
from edge.retention import purge_empties
from edge.sink import DiskFullError, SinkPermissionError
from edge.tui import Stats

__all__ = [
    "WatchOptions",
    "capture_order",
    "inference_threads",
    "purge_empties",
    "run_forever",
    "run_once",
    "watch",
]

log = logging.getLogger("edge.watch")

BUNDLE_CHECK_EVERY = 10.0  # seconds between looks for a bundle `edge learn` swapped in


class WatchOptions:
    """One watcher run: its folders, the thresholds in use, the config (edge.config.Config, the
    one schema every tunable lives in) and the run's own state (the stop event, the bundle it
    follows). Flags given as keywords are laid over `config` by `Config.with_flags`, the one
    way a flag overrides the file; the tunables are read from the config (`opts.settle` is
    `config.watch.settle_seconds`)."""

    def __init__(
        self,
        inbox: Path,
        out: Path,
        thresholds: dict[str, float],
        *,
        config: Config | None = None,
        threshold_overrides: dict[str, float] | None = None,
        follow: Path | None = None,
        learn_from: Path | None = None,
        bundle_check: float = BUNDLE_CHECK_EVERY,
        stop: threading.Event | None = None,
        **flags: Any,
    ) -> None:
        self.inbox = inbox
        self.out = out
        self.thresholds = thresholds
        self.config = (config or Config()).with_flags(flags)
        # the thresholds the config and the flags set: they outlast a bundle swapped in while
        # watching, whose own thresholds replace the old bundle's
        self.threshold_overrides = threshold_overrides or {}
        # the folder whose bundle is followed (None: the one the watcher started with);
        # without --bundle that is OUT/bundle, where `edge learn` installs the camera's own
        self.follow = follow
        self.learn_from = learn_from  # the bundle learning starts from, until OUT/bundle exists
        self.bundle_check = bundle_check  # seconds between looks for a new bundle
        self.stop = stop or threading.Event()

    def __repr__(self) -> str:
        return f"WatchOptions({self.inbox}, {self.out}, {self.thresholds}, {self.config!r})"

    # the tunables, read from the config
    copy = property(lambda self: self.config.watch.copy_files)
    polling = property(
        lambda self: None if self.config.watch.poll == "auto" else self.config.watch.poll
    )
    poll_interval = property(lambda self: self.config.watch.poll_interval)
    rescan_interval = property(lambda self: self.config.watch.rescan_interval)
    settle = property(lambda self: self.config.watch.settle_seconds)
    give_up = property(lambda self: self.config.watch.give_up_seconds)
    batch = property(lambda self: self.config.watch.batch_size)
    lookahead = property(lambda self: self.config.watch.lookahead)
    max_queue = property(lambda self: self.config.watch.max_queue)
    overlays = property(lambda self: self.config.watch.overlays)
    learn_every = property(lambda self: self.config.watch.learn_every)
    burst_gap = property(lambda self: self.config.triage.burst_gap_seconds)
    burst_frames = property(lambda self: self.config.triage.burst_max_frames)
    providers = property(lambda self: self.config.runtime.providers)
    threads = property(lambda self: self.config.runtime.threads)
    measure = property(lambda self: self.config.runtime.measure)
    map_source = property(lambda self: self.config.runtime.map)

    @property
    def delete_empty_after_days(self) -> float | None:
        """None: empties are kept, never deleted."""
        t = self.config.triage
        return t.empty_retention_days if t.delete_empty else None


def watch(bundle: Bundle, opts: WatchOptions, *, once: bool, tui: bool, console) -> int:
    """Run the watcher with a progress bar (`once`) or a live dashboard; write the results
    file when it stops. SIGTERM and Ctrl-C stop it after the batch at hand, the results file
    written as for any other end (a second Ctrl-C stops it at once); returns an exit code."""
    import signal

    stats = Stats(out=opts.out)
    signals: list[str] = []

    def stop(signum: int, _frame: object) -> None:
        if signum == signal.SIGINT and opts.stop.is_set():
            raise KeyboardInterrupt  # asked twice: now, not after the batch
        signals.append(signal.Signals(signum).name)
        stats.status = "stopping"
        opts.stop.set()

    previous = {}
    if threading.current_thread() is threading.main_thread():  # only there can one listen
        previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    undo_logging = None if tui else _log_to_stderr()
    try:
        return _watch(bundle, opts, stats, signals, once=once, tui=tui, console=console)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if undo_logging:
            undo_logging()


def _log_to_stderr() -> Callable[[], None]:
    """Without the dashboard the log is all there is (a service's stderr goes to journald):
    the edge loggers at INFO, one line each, on stderr. Returns how to undo it."""
    import sys

    logger = logging.getLogger("edge")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)

    def undo() -> None:
        logger.removeHandler(handler)
        logger.setLevel(level)

    return undo


def _log_stop(stats: Stats, results: Path) -> None:
    d = stats.decisions
    log.info(
        "stop: %d frame(s) handled (%s), %d left unreadable%s",
        sum(d.values()),
        ", ".join(f"{k} {d[k]}" for k in Verdict),
        len(stats.unreadable),
        f"; results {results}" if results.is_file() else "",
    )


def _nothing_found(inbox: Path, known: int) -> str:
    """What a batch run that found nothing to do says, so an empty card reads as one."""
    from rich.markup import escape

    if known:
        return (
            f"no new frames in {escape(str(inbox))}: its {known} frame(s) are already "
            "in the journal"
        )
    kinds = ", ".join(e.lstrip(".") for e in EXTS)
    return (
        f"[yellow]no frames found in {escape(str(inbox))}[/] (looked for {kinds} files, "
        "in it and its subfolders)"
    )


def _watch(
    bundle: Bundle,
    opts: WatchOptions,
    stats: Stats,
    signals: list[str],
    *,
    once: bool,
    tui: bool,
    console,
) -> int:
    from rich.markup import escape

    from edge.journal import JournalError
    from edge.tui import dashboard, progress_bar, render

    make_dirs(opts.out)  # OUT's own name survives a power cut, with all below it
    results = opts.out / MD_RESULTS
    try:
        if once:
            with progress_bar(console, enabled=tui) as progress:
                run_once(bundle, opts, stats, progress=progress)
            console.print(render(stats))
            if not stats.seen and not sum(stats.decisions.values()):
                console.print(_nothing_found(opts.inbox, stats.already_known), soft_wrap=True)
        elif tui:
            with dashboard(console, stats) as tick:
                run_forever(bundle, opts, stats, on_tick=tick)
        else:
            run_forever(bundle, opts, stats)
    except KeyboardInterrupt:
        console.print(
            "stopped at once: every frame handled so far is in the journal; the "
            "results file is brought up to date by the next run"
        )
        if results.is_file():
            console.print(f"results (from before this stop): {results}", soft_wrap=True)
        return 130
    except JournalError as e:
        console.print(f"[red]journal:[/] {escape(str(e))}")
        return 1
    except (DiskFullError, SinkPermissionError) as e:  # --once: say so and stop, not wait
        console.print(
            f"[red]stopped:[/] {escape(str(e))}. Nothing is lost: the frames not "
            "sorted yet are still in the inbox; run again once this is fixed."
        )
        return 1
    finally:
        _log_stop(stats, results)
    if signals:
        console.print(
            f"stopped ({signals[0]}): {sum(stats.decisions.values())} frame(s) "
            "handled this run, all in the journal and the results file"
            + (
                f"; {stats.pending} not sorted yet: run again to sort them"
                if once and stats.pending
                else ""
            )
        )
    if results.is_file():
        console.print(f"results: {results}", soft_wrap=True)  # a path in one piece
    if stats.unreadable:
        first = ", ".join(escape(f) for f in list(stats.unreadable)[:3])
        console.print(
            f"[red]{len(stats.unreadable)} frame(s) could not be read[/] and were "
            f"left in the inbox ({first}{', ...' if len(stats.unreadable) > 3 else ''}"
            "); fix their permissions and run again"
        )
        return 3
    return 0
