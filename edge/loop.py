"""The watcher's loop: one frame's way through it, stage by stage, in order.

    discover   edge.discover (events, polling, rescans) or a scan of the card
    admit      edge.stability gate, then the journal's `seen` row (edge.sink.admit)
    load       decode at a reduced scale, EXIF time, original size    edge.loader
    infer      the bundle's models, in a thread of their own          edge.loader
    score      Over-MAP against the chosen mask, fused confidence     edge.scorer
    triage     verdict and journal columns, bursts across batches     edge.decide
    learn      the cameras' background models take the batch          Scorer.learn
    place      decisions journaled, then frames moved, then done      edge.sink
    record     the dashboard's counters and one log line per frame    edge.tui.Stats

The journal is the source of truth (edge.journal): a frame is `seen` once whole, `decided`
with its destination before anything moves, `done` after the move; the loop can be killed at
any instant and, started again, handles every frame exactly once. Loading and inference run
ahead of the rest in threads (they have no side effects); everything with state happens in
the calling thread, in order.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from edge.background import CameraBackgrounds
from edge.bundle import Bundle
from edge.decide import Bursts, decide_batch
from edge.discover import scan
from edge.durable import is_disk_full
from edge.exif import when_taken
from edge.journal import Decision, Journal, Verdict, camera_of
from edge.loader import Loader
from edge.providers import default_threads
from edge.reports import write_results
from edge.runtime import Runtime
from edge.scorer import Scorer
from edge.sink import (
    DiskFullError,
    SinkPermissionError,
    SourceUnreadableError,
    admit,
    commit_decisions,
    place_decided,
)
from edge.stability import StabilityGate
from edge.tui import Stats

if TYPE_CHECKING:
    from edge.watch import WatchOptions

log = logging.getLogger("edge.watch")

DISK_FULL_RETRY = 30.0  # seconds between tries while the output disk is full


# -- load .. record: one batch -------------------------------------------------------------


class Pipeline:
    """The stages from load to record for one bundle: paths in, one Decision each out.

    `ahead` starts loading and inferring a batch that `decide` will get soon. The bursts'
    memory and the frames' arrival times outlast a bundle swapped in (`carry`). Use as a
    context manager, or call close(), to stop the loader's threads.
    """

    def __init__(self, scorer: Scorer, opts: WatchOptions, stats: Stats) -> None:
        self.scorer = scorer
        self.opts = opts
        self.stats = stats
        self.loader = Loader(scorer.runtime)
        self.bursts = Bursts(opts.burst_frames)
        self.arrived: dict[Path, float] = {}  # found -> when, for the latency shown
        # the last batch's decisions by frame (path and file identity), handed back as they
        # were if that batch comes again because its commit failed (a full disk): deciding
        # it again would feed the background models and the bursts the same frames twice
        self._last: dict[Path, tuple[tuple[int, int, int], Decision]] = {}

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.loader.close()

    def carry(self, old: Pipeline) -> None:
        """Take over what an earlier pipeline knew of the stream (a bundle swap)."""
        self.arrived, self.bursts = old.arrived, old.bursts

    def ahead(self, paths: list[Path]) -> None:
        self.loader.ahead(paths)

    def decide(self, paths: list[Path]) -> list[Decision | None]:
        """load -> infer -> score -> triage -> learn -> record; None for a frame that may
        not be read now (it stays pending)."""
        ids = [_identity(p) for p in paths]
        again = [self._last.get(p) for p in paths]
        if paths and all(
            a is not None and i is not None and a[0] == i for a, i in zip(again, ids, strict=True)
        ):
            return [a[1] for a in again if a is not None]
        decisions = self._decide(paths)
        self._last = {
            p: (i, d)
            for p, i, d in zip(paths, ids, decisions, strict=True)
            if i is not None and d is not None
        }
        return decisions

    def _decide(self, paths: list[Path]) -> list[Decision | None]:
        opts, inbox = self.opts, self.opts.inbox
        loaded = self.loader.get(paths)
        decisions: list[Decision | None] = [None] * len(paths)
        for i, reason in loaded.failed.items():
            decisions[i] = Decision(Verdict.QUARANTINE, reason=reason)
        for i, reason in loaded.denied.items():
            left_unreadable(
                self.stats, paths[i].relative_to(inbox).as_posix(), f"{paths[i]}: {reason}"
            )
        if loaded.images:
            assert loaded.outputs is not None
            cameras = [camera_of(paths[i].relative_to(inbox).as_posix()) for i in loaded.index]
            scored = self.scorer.score(loaded.images, cameras, outputs=loaded.outputs)
            spec = self.scorer.manifest.classifier.input if opts.overlays else None
            made, evidence = decide_batch(
                cameras,
                loaded.taken,
                scored,
                opts.thresholds,
                burst_gap=opts.burst_gap,
                burst_frames=opts.burst_frames,
                earlier=self.bursts.earlier(cameras),
                overlay_spec=spec,
            )
            self.bursts.add(evidence, opts.burst_gap)
            self.scorer.learn(loaded.images, cameras, scored)
            for i, d in zip(loaded.index, made, strict=True):
                decisions[i] = d
        now = time.monotonic()
        for p, d in zip(paths, decisions, strict=True):
            if d is not None:
                record(
                    self.stats, p.relative_to(inbox).as_posix(), d, now - self.arrived.pop(p, now)
                )
        return decisions


def _identity(path: Path) -> tuple[int, int, int] | None:
    """Which file is at `path` now (inode, size, mtime); None if it cannot be seen."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def record(stats: Stats, rel: str, d: Decision, latency: float) -> None:
    """Count a frame on the dashboard and log it in one line (all a service's journal sees
    of the frames: the file, the decision, the label and the fused confidence)."""
    stats.record(rel, d.label or d.reason or "", d.decision, d.confidence or 0.0, latency)
    if d.decision == Verdict.QUARANTINE:
        log.info("%s: quarantine (%s)", rel, d.reason or "unreadable")
    else:
        log.info("%s: %s, %s, confidence %.2f", rel, d.decision, d.label, d.confidence or 0.0)


def left_unreadable(stats: Stats, rel: str, why: str) -> None:
    """Count a frame left in the inbox because it may not be read; log it once per reason,
    not again each time a rescan finds it still locked."""
    if stats.unreadable.get(rel) != why:
        log.error("%s; left in the inbox, taken once it is readable", why)
    stats.unreadable[rel] = why


# -- the journal's pending rows, batch after batch -------------------------------------------


def drain(
    journal: Journal,
    inbox: str | Path,
    out: str | Path,
    decide: Callable[[list[Path]], list[Decision | None]],
    *,
    copy: bool = False,
    batch: int = 32,
    sidecars: bool = True,
    ahead: Callable[[list[Path]], None] | None = None,
    lookahead: int = 2,
    stop: Callable[[], bool] | None = None,
) -> int:
    """Bring every pending journal row to a terminal state; returns how many were finished.

    Per batch of rows: rows whose file is gone are marked vanished; `decide` gets the inbox
    paths of the `seen` ones and returns one Decision each (None: may not be read now, stays
    pending); the decisions are journaled (edge.sink.commit_decisions), then every decided row
    of the batch, a crash's leftovers too, is placed (edge.sink.place_decided).

    `ahead`, when given, is told this batch and up to `lookahead` more before `decide` is
    asked, so their loading and inference run while this thread places the ones before. The
    cursor over journal ids means a row left pending is tried once per call. `stop` is asked
    before each batch (Ctrl-C is answered within a batch). DiskFullError and
    SinkPermissionError propagate with nothing lost.
    """
    inbox, out = Path(inbox), Path(out)
    finished, cursor = 0, 0
    while not (stop and stop()) and (rows := journal.pending(limit=batch, after_id=cursor)):
        cursor = rows[-1].id
        seen = [r for r in rows if r.state == "seen"]
        gone = [r for r in seen if not (inbox / r.relpath).exists()]
        for r in gone:
            journal.mark_vanished(r.id)
        finished += len(gone)
        seen = [r for r in seen if r not in gone]
        if seen:
            paths = [inbox / r.relpath for r in seen]
            if ahead is not None:
                for upcoming in [paths, *_upcoming(journal, inbox, cursor, batch, lookahead)]:
                    ahead(upcoming)
            decisions = decide(paths)
            if len(decisions) != len(seen):
                raise ValueError(f"decide returned {len(decisions)} decisions for {len(seen)}")
            commit_decisions(journal, out, seen, decisions)
        finished += place_decided(journal, inbox, out, rows, copy=copy, sidecars=sidecars)
    return finished


def _upcoming(
    journal: Journal, inbox: Path, cursor: int, batch: int, lookahead: int
) -> list[list[Path]]:
    """The inbox paths of the next `lookahead` batches after `cursor`, as `drain` will hand
    them to `decide` (seen frames still in the inbox, in journal order)."""
    rows = journal.pending(limit=batch * lookahead, after_id=cursor)
    chunks = (rows[i : i + batch] for i in range(0, len(rows), batch))
    batches = (
        [p for r in c if r.state == "seen" and (p := inbox / r.relpath).exists()] for c in chunks
    )
    return [b for b in batches if b]


def process(
    journal: Journal, pipeline: Pipeline, opts: WatchOptions, stats: Stats, *, pause: bool = True
) -> None:
    """`drain`, pausing (not failing) while the output disk is full or a folder may not be
    written; with `pause=False` (a run over a card) the error goes up to say so instead."""
    while not opts.stop.is_set():
        try:
            drain(
                journal,
                opts.inbox,
                opts.out,
                pipeline.decide,
                copy=opts.copy,
                batch=opts.batch,
                lookahead=opts.lookahead,
                ahead=pipeline.ahead if opts.lookahead > 0 else None,
                stop=opts.stop.is_set,
            )
            if stats.status.startswith("paused"):
                stats.status = "watching"
            return
        except (DiskFullError, SinkPermissionError) as e:
            if not pause:
                raise
            wait_paused(opts, stats, e)


def wait_paused(opts: WatchOptions, stats: Stats, e: Exception) -> None:
    stats.status = f"paused: {e}"
    log.error("paused: %s; retrying in %.0f s, nothing is lost", e, DISK_FULL_RETRY)
    opts.stop.wait(DISK_FULL_RETRY)


# -- discover and admit -----------------------------------------------------------------------


def known(journal: Journal, inbox: Path, path: Path, st: os.stat_result | None = None) -> bool:
    """Already journaled with this size and time (a card rescanned in copy mode)."""
    try:
        st = st or path.stat()
    except OSError:
        return False
    return journal.is_known(path.relative_to(inbox).as_posix(), st.st_size, st.st_mtime)


def capture_order(inbox: Path, paths: Iterable[Path]) -> list[Path]:
    """Camera by camera (first subfolder), each camera's frames in the order they were taken:
    EXIF DateTimeOriginal, else the file's time; then the name, digits as numbers (a burst's
    frames share a second). A card's directory order is no order at all, and bursts and the
    background models need each camera's frames as they came."""

    def key(p: Path) -> tuple:
        rel = p.relative_to(inbox).as_posix()
        t, _source = when_taken(p)
        name = tuple(
            (0, int(s), "") if s.isdigit() else (1, 0, s) for s in re.split(r"(\d+)", rel) if s
        )
        return camera_of(rel), t is None, t or datetime.min, name

    return sorted(paths, key=key)


def card_frames(journal: Journal, opts: WatchOptions, stats: Stats) -> list[Path]:
    """A card's frames not in the journal yet, in capture order (`--once`)."""
    everything = list(scan(opts.inbox, exclude=[opts.out]))
    found = [p for p in everything if not known(journal, opts.inbox, p)]
    stats.already_known = len(everything) - len(found)
    return capture_order(opts.inbox, found)


def admit_ready(journal: Journal, gate: StabilityGate, pipeline: Pipeline) -> int:
    """Journal the frames the gate calls whole (`seen`) or never readable (quarantine).

    A frame that may not be read at all (permission denied) is not journaled: it stays in the
    inbox, is logged as an error, and a later rescan takes it once it is readable. When the
    disk is too full to commit (DiskFullError), none is journaled and all go back to the gate
    for the next try."""
    opts, stats, arrived, n = pipeline.opts, pipeline.stats, pipeline.arrived, 0
    verdicts = gate.poll()
    try:
        with journal.transaction():
            for v in verdicts:
                rel = v.path.relative_to(opts.inbox).as_posix()
                try:
                    if v.status == "whole":
                        if admit(journal, opts.inbox, opts.out, v.path) is None:
                            arrived.pop(v.path, None)  # known: nothing pending
                        else:
                            n += 1
                        stats.unreadable.pop(rel, None)
                    elif v.status == "unreadable":
                        if (
                            not known(journal, opts.inbox, v.path)
                            and admit(
                                journal, opts.inbox, opts.out, v.path, quarantine_reason=v.reason
                            )
                            is not None
                        ):
                            latency = time.monotonic() - arrived.get(v.path, time.monotonic())
                            record(
                                stats, rel, Decision(Verdict.QUARANTINE, reason=v.reason), latency
                            )
                        arrived.pop(v.path, None)
                        n += 1
                    else:
                        arrived.pop(v.path, None)
                except SourceUnreadableError as e:
                    left_unreadable(stats, rel, str(e))
    except DiskFullError:  # nothing committed: they wait in the gate for the next try
        for v in verdicts:
            if v.status != "gone":
                gate.add(v.path)
        raise
    return n


# -- the bundle's runtime -----------------------------------------------------------------------


def inference_threads(opts: WatchOptions) -> int:
    """ONNX Runtime's CPU threads: all cores but one when batches are loaded and sorted in
    other threads (lookahead), so the models do not fight the loader for a core; all cores
    when everything runs one batch at a time. An explicit `threads` wins."""
    if opts.threads:
        return opts.threads
    cores = default_threads()
    return max(1, cores - 1) if opts.lookahead > 0 else cores


def open_scorer(
    bundle: Bundle,
    opts: WatchOptions,
    backgrounds: CameraBackgrounds | None = None,
    event: str = "start",
) -> tuple[Scorer, str]:
    runtime = Runtime.from_bundle(bundle, providers=opts.providers, threads=inference_threads(opts))
    scorer = Scorer(
        runtime,
        bundle.manifest,
        measure=opts.measure,
        map_source=opts.map_source,
        backgrounds=backgrounds if backgrounds is not None else CameraBackgrounds(),
    )
    provider = runtime.providers.get("classifier", "?")
    log.info(
        "%s: bundle %s, inbox %s, out %s, providers %s",
        event,
        bundle.root,
        opts.inbox,
        opts.out,
        ", ".join(f"{m} {p}" for m, p in runtime.providers.items()),
    )
    return scorer, provider


def results(journal: Journal, opts: WatchOptions, bundle: Bundle, *, live: bool = False) -> None:
    """Rewrite the results file from the journal. A full disk stops a run over a card
    (DiskFullError) and is only logged by a live watcher: the file is rewritten later,
    nothing is lost. It records this run's thresholds: the journal keeps decisions only."""
    try:
        write_results(journal, opts.out, bundle.manifest, opts.thresholds)
    except OSError as e:
        if not is_disk_full(e):
            raise
        if not live:
            raise DiskFullError(f"no space left writing the results in {opts.out}") from e
        log.error("no space left writing the results in %s; written again later", opts.out)


# -- the two runs -------------------------------------------------------------------------------

RESULTS_EVERY = 60.0  # seconds between rewrites of the results file while watching, at least
RESULTS_SHARE = 0.05  # ... and at most this share of the time spent rewriting it
RECOUNT_EVERY = 60.0  # seconds between counts of the frames waiting in OUT/review


def run_once(
    bundle: Bundle,
    opts: WatchOptions,
    stats: Stats,
    progress: Callable[[int, int], None] | None = None,
) -> Stats:
    """Handle what is in the inbox now, then return (a run over a card)."""
    from edge.retention import purge_empties
    from edge.sink import clean_temps

    scorer, stats.provider = open_scorer(bundle, opts)
    with (
        Pipeline(scorer, opts, stats) as pipeline,
        Journal.open(opts.out, exclusive=True) as journal,
    ):
        clean_temps(opts.out)
        stats.recount()
        process(journal, pipeline, opts, stats, pause=False)  # finish what a crash left
        # frames already on a card are whole or never will be: no need to wait long for them
        give_up = min(opts.give_up, max(5.0, 3 * opts.settle))
        gate = StabilityGate(settle=opts.settle, give_up=give_up, decode=False)
        frames = card_frames(journal, opts, stats)
        for p in frames:  # the gate hands them on in this order
            gate.add(p)
            pipeline.arrived[p] = time.monotonic()
        if opts.lookahead > 0:
            # loading has no side effects: the first batches (as `drain` will cut them) are
            # decoded and inferred while the card's frames are hashed and journaled
            head = frames[: opts.batch * (opts.lookahead + 1)]
            for k in range(0, len(head), opts.batch):
                pipeline.ahead(head[k : k + opts.batch])
        total = stats.seen = len(gate)
        done = 0
        while len(gate) and not opts.stop.is_set():
            admit_ready(journal, gate, pipeline)
            before = sum(stats.decisions.values())
            process(journal, pipeline, opts, stats, pause=False)
            done += sum(stats.decisions.values()) - before
            stats.pending = len(pipeline.arrived)
            if progress:
                progress(done, total)
            if len(gate):
                time.sleep(min(0.2, opts.settle))
        process(journal, pipeline, opts, stats, pause=False)
        stats.pending = len(pipeline.arrived)
        for f in [] if opts.stop.is_set() else journal.pending():
            # journaled, then unreadable: placed by a later run (after a stop, merely not yet)
            stats.unreadable.setdefault(f.relpath, "could not be read to be placed")
        if opts.delete_empty_after_days:
            purge_empties(journal, opts.out, opts.delete_empty_after_days)
        results(journal, opts, bundle)
    stats.status = "stopped" if opts.stop.is_set() else "done"
    return stats


def run_forever(
    bundle: Bundle, opts: WatchOptions, stats: Stats, on_tick: Callable[[], None] | None = None
) -> Stats:
    """Watch until `opts.stop` is set (Ctrl-C, SIGTERM).

    A bundle replaced in place while watching (`edge learn` swaps the camera's new bundle
    into OUT/bundle atomically) is taken between two batches: the frames waiting, the bursts
    and the background models carry over; a replacement that does not load is logged and the
    bundle in use kept."""
    from contextlib import ExitStack

    from edge.discover import Watcher
    from edge.follow import Follower, swap_bundle
    from edge.retention import PURGE_EVERY, purge_empties
    from edge.sink import clean_temps

    scorer, stats.provider = open_scorer(bundle, opts)
    follower = Follower(opts.follow or bundle.root, opts)
    pipeline = Pipeline(scorer, opts, stats)
    with ExitStack() as stack:
        stack.callback(lambda: pipeline.close())  # the one in use at the end: a swap replaces it
        journal = stack.enter_context(Journal.open(opts.out, exclusive=True))
        stack.callback(follower.join)
        clean_temps(opts.out)
        stats.recount()
        process(journal, pipeline, opts, stats)
        gate = StabilityGate(settle=opts.settle, give_up=opts.give_up, decode=False)
        written, last_write, results_every = -1, time.monotonic(), RESULTS_EVERY
        last_purge, last_count = -PURGE_EVERY, time.monotonic()
        last_check = time.monotonic()
        watcher = stack.enter_context(
            Watcher(
                opts.inbox,
                exclude=[opts.out],
                use_polling=opts.polling,
                poll_interval=opts.poll_interval,
                rescan_interval=opts.rescan_interval,
                maxsize=opts.max_queue,
                skip=lambda p, st: known(journal, opts.inbox, p, st),
            )
        )
        while not opts.stop.is_set():
            for p in watcher.get_batch(64, timeout=0.1):  # discover
                if p not in pipeline.arrived:
                    stats.seen += 1
                    pipeline.arrived.setdefault(p, time.monotonic())
                gate.add(p)
            try:
                admitted = admit_ready(journal, gate, pipeline)
            except DiskFullError as e:  # no room to journal them: they wait in the gate
                wait_paused(opts, stats, e)
                continue
            if admitted:
                process(journal, pipeline, opts, stats)
            if time.monotonic() - last_check > opts.bundle_check:
                last_check = time.monotonic()
                if follower.changed():
                    swapped = swap_bundle(follower.root, pipeline, opts, stats)
                    if swapped is not None:
                        bundle, pipeline = swapped
            stats.pending = len(pipeline.arrived)
            if on_tick:
                on_tick()
            days = opts.delete_empty_after_days
            if days and time.monotonic() - last_purge > PURGE_EVERY:
                purge_empties(journal, opts.out, days)
                last_purge = time.monotonic()
            handled = sum(stats.decisions.values())
            if handled != written and time.monotonic() - last_write > results_every:
                t0 = time.monotonic()
                results(journal, opts, bundle, live=True)
                written, last_write = handled, time.monotonic()
                # the file holds every frame of the journal, and a journal of weeks takes
                # seconds to write out: the longer it takes, the rarer it is rewritten
                results_every = max(RESULTS_EVERY, (last_write - t0) / RESULTS_SHARE)
            if time.monotonic() - last_count > RECOUNT_EVERY:
                stats.recount()  # a person takes frames out of review/ as they go
                last_count = time.monotonic()
        results(journal, opts, bundle, live=True)
    return stats
