"""`edge watch`: every frame that lands in the inbox is classified, scored and sorted, once.

The journal is the source of truth (see edge/journal.py): a frame is journaled `seen` once it
is whole, `decided` with its destination before anything moves, `done` after the move. So the
loop below can be killed at any instant and, started again, finishes what was begun and
handles every frame exactly once:

    discover (events + polling + rescans) -> stability gate -> admit (journal `seen`)
    -> decide (decode, bundle, Over-MAP, fused confidence, triage) -> place (move/copy) -> done
"""

from __future__ import annotations

import errno
import logging
import math
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from edge.background import CameraBackgrounds
from edge.bundle import MANIFEST, Bundle, BundleError, load_bundle
from edge.decode import DecodeError, decode_frame
from edge.discover import EXTS, Watcher, scan
from edge.durable import make_dirs
from edge.exif import when_taken
from edge.journal import Decision, Journal, camera_of
from edge.overlay import render, write_overlay
from edge.preprocess import CROP_RATIO
from edge.providers import default_threads
from edge.reports import MD_RESULTS, write_results
from edge.runtime import Outputs, Prepared, Runtime
from edge.scorer import Scored, Scorer
from edge.sink import (
    DiskFullError,
    SinkPermissionError,
    SourceUnreadableError,
    admit,
    clean_temps,
    process_pending,
)
from edge.stability import StabilityGate
from edge.triage import BURST_FRAMES, Evidence, decide_all
from edge.tui import Stats

log = logging.getLogger("edge.watch")

DISK_FULL_RETRY = 30.0  # seconds between tries while the output disk is full
RESULTS_EVERY = 60.0  # seconds between rewrites of the results file while watching, at least
RESULTS_SHARE = 0.05  # ... and at most this share of the time spent rewriting it
PURGE_EVERY = 3600.0  # seconds between sweeps for empties past their retention
RECOUNT_EVERY = 60.0  # seconds between counts of the frames waiting in OUT/review
MAX_AHEAD = 8  # batches loaded ahead and kept waiting, at most
BUNDLE_CHECK_EVERY = 10.0  # seconds between looks for a bundle `edge learn` swapped in


@dataclass
class WatchOptions:
    inbox: Path
    out: Path
    thresholds: dict[str, float]
    copy: bool = False
    polling: bool | None = None
    poll_interval: float = 2.0
    rescan_interval: float = 300.0
    settle: float = 2.0
    give_up: float = 600.0
    batch: int = 16
    lookahead: int = 2  # batches decoded and inferred ahead in other threads; 0: one at a time
    max_queue: int = 2048
    burst_gap: float = 10.0
    burst_frames: int = BURST_FRAMES
    overlays: bool = True
    providers: list[str] | None = None
    threads: int | None = None
    measure: str = "energy"
    delete_empty_after_days: float | None = None  # None: empties are kept, never deleted
    # the thresholds the config and the flags set: they outlast a bundle swapped in while
    # watching, whose own thresholds replace the old bundle's
    threshold_overrides: dict[str, float] = field(default_factory=dict)
    bundle_check: float = BUNDLE_CHECK_EVERY  # seconds between looks for a new bundle
    # the folder whose bundle is followed (None: the one the watcher started with); without
    # --bundle that is OUT/bundle, where `edge learn` installs the camera's own bundle
    follow: Path | None = None
    learn_every: int = 0  # learn from the answers after this many new ones (0: never)
    learn_from: Path | None = None  # the bundle learning starts from, until OUT/bundle exists
    stop: threading.Event = field(default_factory=threading.Event)


@dataclass
class _Loaded:
    """A batch read from disk and made ready for the models: the loader thread's work."""

    paths: list[Path]
    failed: dict[int, str]  # paths[i] could not be decoded: i -> why
    denied: dict[int, str]  # paths[i] may not be read (permission): left pending, i -> why
    index: list[int]  # images[k] is paths[index[k]]
    images: list[np.ndarray]
    times: list[datetime | None]
    time_sources: list[str | None]  # "exif", "file" (modification time) or None
    batches: list[Prepared]  # in chunks of at most the runtime's max_batch
    sizes: list[tuple[int, int]]  # the original frames' (width, height), not the decode's


class Decider:
    """The `decide` stage for `process_pending`: frames in, one Decision each.

    Three stages overlap when `process_pending` announces batches ahead (`prefetch`): a loader
    thread decodes and resizes batch N+2, an inference thread runs the models on batch N+1,
    and the calling thread scores, sorts and writes batch N (and then moves it and records it
    in the journal). Loading and inference have no side effects; everything with state (the
    background models, bursts, counters, overlays) happens in the calling thread, in order.
    Use as a context manager, or call close(), to stop the two threads.
    """

    def __init__(self, scorer: Scorer, opts: WatchOptions, stats: Stats) -> None:
        self.scorer = scorer
        self.opts = opts
        self.stats = stats
        self.arrived: dict[Path, float] = {}
        m = scorer.manifest
        # decode big JPEGs at a reduced scale, never below what the models' views need
        self.min_side = math.ceil(max(*m.classifier.input.size, *m.segmenter.input.size)
                                  / CROP_RATIO)
        # the last frames of each camera, so a burst spanning two batches is still one burst
        self.recent: dict[str, deque[Evidence]] = {}
        self._loader = ThreadPoolExecutor(1, thread_name_prefix="edge-load")
        self._models = ThreadPoolExecutor(1, thread_name_prefix="edge-infer")
        self._ahead: dict[tuple[Path, ...], Future[tuple[_Loaded, list[Outputs]]]] = {}
        # the last batch's decisions by frame (path and file identity), handed back as they
        # were if that batch comes again because its commit failed (a full disk)
        self._last: dict[Path, tuple[tuple[int, int, int], Decision]] = {}

    def __enter__(self) -> Decider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._ahead.clear()
        self._loader.shutdown(wait=True, cancel_futures=True)
        self._models.shutdown(wait=True, cancel_futures=True)

    def prefetch(self, paths: list[Path]) -> None:
        """Start loading and inferring a batch that __call__ will get soon (a hint)."""
        key = tuple(paths)
        if key not in self._ahead:
            loaded = self._loader.submit(self._load, paths)
            self._ahead[key] = self._models.submit(lambda: self._infer(loaded.result()))

    def __call__(self, paths: list[Path]) -> list[Decision | None]:
        ahead = self._ahead.pop(tuple(paths), None)
        # a batch announced but never asked for (a frame of it vanished meanwhile) is dropped
        # once a few newer ones wait, so memory stays bounded
        for key in list(self._ahead)[: max(0, len(self._ahead) - MAX_AHEAD)]:
            self._ahead.pop(key)
        ids = [_identity(p) for p in paths]
        again = [self._last.get(p) for p in paths]
        if paths and all(a is not None and i is not None and a[0] == i
               for a, i in zip(again, ids, strict=True)):
            # decided before, never recorded: deciding again would feed the background
            # models and the counters the same frames twice
            return [a[1] for a in again if a is not None]
        loaded, outputs = ahead.result() if ahead else self._infer(self._load(paths))
        decisions = self._finish(loaded, outputs)
        self._last = {p: (i, d) for p, i, d in zip(paths, ids, decisions, strict=True)
                      if i is not None and d is not None}
        return decisions

    def _load(self, paths: list[Path]) -> _Loaded:
        failed, denied, index, images, times, sources, sizes = {}, {}, [], [], [], [], []
        for i, p in enumerate(paths):
            try:
                image, width, height = decode_frame(p, min_side=self.min_side)
            except DecodeError as e:
                # a mode that changed since the frame was journaled is no fault of the frame's
                (denied if isinstance(e.__cause__, PermissionError) else failed)[i] = str(e)
                continue
            images.append(image)
            sizes.append((width, height))
            index.append(i)
            t, source = when_taken(p)
            times.append(t)
            sources.append(source)
        runtime, step = self.scorer.runtime, self.scorer.runtime.max_batch
        batches = [runtime.prepare(images[i : i + step]) for i in range(0, len(images), step)]
        return _Loaded(paths, failed, denied, index, images, times, sources, batches, sizes)

    def _infer(self, loaded: _Loaded) -> tuple[_Loaded, list[Outputs]]:
        return loaded, [self.scorer.runtime.infer(b) for b in loaded.batches]

    def _finish(self, loaded: _Loaded, outputs: list[Outputs]) -> list[Decision | None]:
        inbox, paths, images, index = self.opts.inbox, loaded.paths, loaded.images, loaded.index
        decisions: list[Decision | None] = [None] * len(paths)  # None: not now (denied)
        for i, reason in loaded.failed.items():
            decisions[i] = Decision("quarantine", reason=reason)
        for i, reason in loaded.denied.items():
            _left_unreadable(self.stats, paths[i].relative_to(inbox).as_posix(),
                             f"{paths[i]}: {reason}")
        if images:
            rels = [paths[i].relative_to(inbox).as_posix() for i in index]
            cameras = [camera_of(r) for r in rels]
            times = loaded.times
            views = np.concatenate([b.views for b in loaded.batches])
            scored = self.scorer.score(images, cameras, outputs=Outputs.join(outputs))
            evidence = [
                Evidence(camera=c, time=t, label=s.score.label, is_empty_class=s.is_empty_class,
                         is_human=s.is_human, softmax=s.score.softmax, fused=s.fused,
                         foreground=s.score.foreground_fraction,
                         background_ready=s.background_ready)
                for c, t, s in zip(cameras, times, scored, strict=True)
            ]
            verdicts = self._decide(evidence)
            for k, (i, s) in enumerate(zip(index, scored, strict=True)):
                verdict = verdicts[k]
                extra = {
                    "time": times[k].isoformat() if times[k] else None,
                    "time_source": loaded.time_sources[k],
                    "width": loaded.sizes[k][0], "height": loaded.sizes[k][1],
                    "entropy": s.entropy, "foreground": s.score.foreground_fraction,
                    "mask_source": s.score.mask_source, "measure": s.score.measure,
                    "top": [[n, p] for n, p in s.score.top_k],
                }  # fmt: skip
                if s.guess is not None:  # a finer name, marked as a guess wherever shown
                    extra["species_guess"] = [s.guess[0], round(s.guess[1], 4)]
                if verdict == "review" and self.opts.overlays:
                    extra["overlay"] = self._overlay(rels[k], images[k], views[k], s)
                decisions[i] = Decision(
                    verdict, label=s.score.label, class_index=s.score.class_index,
                    softmax=s.score.softmax, overmap=s.score.overmap, confidence=s.fused,
                    extra=extra,
                )  # fmt: skip
        now = time.monotonic()
        for p, d in zip(paths, decisions, strict=True):
            if d is not None:
                arrived = self.arrived.pop(p, now)
                _record(self.stats, p.relative_to(inbox).as_posix(), d, now - arrived)
        return decisions

    def _decide(self, evidence: list[Evidence]) -> list[str]:
        """The triage of a batch, with each camera's last frames as the bursts' context."""
        opts = self.opts
        earlier = [item for c in dict.fromkeys(e.camera for e in evidence)
                   for item in self.recent.get(c, ())]
        verdicts = decide_all(evidence, opts.thresholds, burst_gap_seconds=opts.burst_gap,
                              burst_frames=opts.burst_frames, earlier=earlier)
        for e in evidence:
            if e.time is not None:
                self.recent.setdefault(e.camera, deque(maxlen=opts.burst_frames)).append(e)
        return verdicts

    def _overlay(self, rel: str, image: np.ndarray, view: np.ndarray, s: Scored) -> str:
        spec = self.scorer.manifest.classifier.input
        picture = render(image, s.cam, s.score.mask, spec, view=view,
                         label=f"{s.score.label}  ({s.score.mask_source} mask)",
                         scores={"softmax": s.score.softmax, "overmap": s.score.overmap,
                                 "fused": s.fused, "fg": s.score.foreground_fraction})
        rel_overlay = f"overlays/{rel}.overmap.jpg"
        try:
            write_overlay(self.opts.out / rel_overlay, picture)
        except OSError as e:  # a full disk pauses the watcher as for the frames themselves
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFullError(f"no space left writing {self.opts.out / rel_overlay}") from e
            raise
        return rel_overlay


def _identity(path: Path) -> tuple[int, int, int] | None:
    """Which file is at `path` now (inode, size, mtime); None if it cannot be seen."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def purge_empties(journal: Journal, out: Path, days: float, *, now: float | None = None) -> int:
    """Delete frames sorted as empty more than `days` ago (and their sidecars); the journal
    keeps their rows. Only ever called when the user asked for it with a retention period."""
    if days <= 0:
        raise ValueError("the retention period must be positive")
    cutoff = (time.time() if now is None else now) - days * 86400
    n = 0
    with journal.transaction():
        for f in journal.frames(state="done"):
            if f.decision != "empty" or f.dest is None or (f.done_at or cutoff) >= cutoff:
                continue
            path = out / f.dest
            if path.exists():
                path.unlink()
                n += 1
            path.with_name(path.name + ".json").unlink(missing_ok=True)
            journal.mark_deleted(f.id)  # also when a crash came between the unlink and this
    if n:
        log.info("deleted %d empty frames older than %g days", n, days)
    return n


def inference_threads(opts: WatchOptions) -> int:
    """ONNX Runtime's CPU threads: all cores but one when batches are loaded and sorted in
    other threads (lookahead), so the models do not fight the loader for a core; all cores
    when everything runs one batch at a time. An explicit `threads` wins."""
    if opts.threads:
        return opts.threads
    cores = default_threads()
    return max(1, cores - 1) if opts.lookahead > 0 else cores


def open_scorer(bundle: Bundle, opts: WatchOptions,
                backgrounds: CameraBackgrounds | None = None,
                event: str = "start") -> tuple[Scorer, str]:
    runtime = Runtime.from_bundle(bundle, providers=opts.providers,
                                  threads=inference_threads(opts))
    scorer = Scorer(runtime, bundle.manifest, measure=opts.measure,
                    backgrounds=backgrounds if backgrounds is not None else CameraBackgrounds())
    provider = runtime.providers.get("classifier", "?")
    log.info("%s: bundle %s, inbox %s, out %s, providers %s", event, bundle.root, opts.inbox,
             opts.out, ", ".join(f"{m} {p}" for m, p in runtime.providers.items()))
    return scorer, provider


def _record(stats: Stats, rel: str, d: Decision, latency: float) -> None:
    """Count a frame on the dashboard and log it in one line (all a service's journal sees
    of the frames: the file, the decision, the label and the fused confidence)."""
    stats.record(rel, d.label or d.reason or "", d.decision, d.confidence or 0.0, latency)
    if d.decision == "quarantine":
        log.info("%s: quarantine (%s)", rel, d.reason or "unreadable")
    else:
        log.info("%s: %s, %s, confidence %.2f", rel, d.decision, d.label,
                 d.confidence or 0.0)


def _known(journal: Journal, inbox: Path, path: Path, st: os.stat_result | None = None) -> bool:
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
        name = tuple((0, int(s), "") if s.isdigit() else (1, 0, s)
                     for s in re.split(r"(\d+)", rel) if s)
        return camera_of(rel), t is None, t or datetime.min, name

    return sorted(paths, key=key)


def _left_unreadable(stats: Stats, rel: str, why: str) -> None:
    """Count a frame left in the inbox because it may not be read; log it once per reason,
    not again each time a rescan finds it still locked."""
    if stats.unreadable.get(rel) != why:
        log.error("%s; left in the inbox, taken once it is readable", why)
    stats.unreadable[rel] = why


def _admit_verdicts(journal: Journal, gate: StabilityGate, decider: Decider) -> int:
    """Journal the frames the gate calls whole (`seen`) or never readable (quarantine).

    A frame that cannot be read at all (permission denied) is not journaled: it stays in the
    inbox, is logged as an error, and a later rescan takes it once it is readable. When the
    disk is too full to commit (DiskFullError), none is journaled and all go back to the gate
    for the next try."""
    opts, n = decider.opts, 0
    verdicts = gate.poll()
    try:
        with journal.transaction():
            for v in verdicts:
                rel = v.path.relative_to(opts.inbox).as_posix()
                try:
                    if v.status == "whole":
                        if admit(journal, opts.inbox, opts.out, v.path) is None:
                            decider.arrived.pop(v.path, None)  # known: nothing pending
                        else:
                            n += 1
                        decider.stats.unreadable.pop(rel, None)
                    elif v.status == "unreadable":
                        if not _known(journal, opts.inbox, v.path) and admit(
                            journal, opts.inbox, opts.out, v.path, quarantine_reason=v.reason
                        ) is not None:
                            arrived = decider.arrived.pop(v.path, time.monotonic())
                            _record(decider.stats, rel, Decision("quarantine", reason=v.reason),
                                    time.monotonic() - arrived)
                        decider.arrived.pop(v.path, None)
                        n += 1
                    else:
                        decider.arrived.pop(v.path, None)
                except SourceUnreadableError as e:
                    _left_unreadable(decider.stats, rel, str(e))
    except DiskFullError:  # nothing committed: they wait in the gate for the next try
        for v in verdicts:
            if v.status != "gone":
                gate.add(v.path)
        raise
    return n


def _process(journal: Journal, decider: Decider, opts: WatchOptions, stats: Stats, *,
             pause: bool = True) -> None:
    """process_pending, pausing (not failing) while the output disk is full or a folder may
    not be written; with `pause=False` (a batch run) the error goes up to say so instead."""
    while not opts.stop.is_set():
        try:
            process_pending(journal, opts.inbox, opts.out, decider, copy=opts.copy,
                            batch=opts.batch, lookahead=opts.lookahead,
                            prefetch=decider.prefetch if opts.lookahead > 0 else None,
                            stop=opts.stop.is_set)
            if stats.status.startswith("paused"):
                stats.status = "watching"
            return
        except (DiskFullError, SinkPermissionError) as e:
            if not pause:
                raise
            _pause(opts, stats, e)


def _pause(opts: WatchOptions, stats: Stats, e: Exception) -> None:
    stats.status = f"paused: {e}"
    log.error("paused: %s; retrying in %.0f s, nothing is lost", e, DISK_FULL_RETRY)
    opts.stop.wait(DISK_FULL_RETRY)


def _write_results(journal: Journal, opts: WatchOptions, bundle: Bundle, *,
                   live: bool = False) -> None:
    """write_results. A full disk stops a batch run (DiskFullError) and is only logged by a
    live watcher: the file is rewritten from the journal later, nothing is lost. It records
    this run's thresholds: the journal keeps each frame's decision, not the thresholds."""
    out = opts.out
    try:
        write_results(journal, out, bundle.manifest, opts.thresholds)
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        if not live:
            raise DiskFullError(f"no space left writing the results in {out}") from e
        log.error("no space left writing the results in %s; written again later", out)


def run_once(bundle: Bundle, opts: WatchOptions, stats: Stats,
             progress: Callable[[int, int], None] | None = None) -> Stats:
    """Handle what is in the inbox now, then return (a batch run over a card)."""
    scorer, stats.provider = open_scorer(bundle, opts)
    with Decider(scorer, opts, stats) as decider, \
            Journal.open(opts.out, exclusive=True) as journal:
        clean_temps(opts.out)
        stats.recount()
        _process(journal, decider, opts, stats, pause=False)  # finish what a crash left
        # frames already on a card are whole or never will be: no need to wait long for them
        give_up = min(opts.give_up, max(5.0, 3 * opts.settle))
        gate = StabilityGate(settle=opts.settle, give_up=give_up, decode=False)
        everything = list(scan(opts.inbox, exclude=[opts.out]))
        found = [p for p in everything if not _known(journal, opts.inbox, p)]
        stats.already_known = len(everything) - len(found)
        for p in capture_order(opts.inbox, found):  # the gate hands them on in this order
            gate.add(p)
            decider.arrived[p] = time.monotonic()
        total = len(gate)
        stats.seen = total
        done = 0
        while len(gate) and not opts.stop.is_set():
            _admit_verdicts(journal, gate, decider)
            before = sum(stats.decisions.values())
            _process(journal, decider, opts, stats, pause=False)
            done += sum(stats.decisions.values()) - before
            stats.pending = len(decider.arrived)
            if progress:
                progress(done, total)
            if len(gate):
                time.sleep(min(0.2, opts.settle))
        _process(journal, decider, opts, stats, pause=False)
        stats.pending = len(decider.arrived)
        for f in [] if opts.stop.is_set() else journal.pending():
            # journaled, then unreadable: placed by a later run (after a stop, merely not yet)
            stats.unreadable.setdefault(f.relpath, "could not be read to be placed")
        if opts.delete_empty_after_days:
            purge_empties(journal, opts.out, opts.delete_empty_after_days)
        _write_results(journal, opts, bundle)
    stats.status = "stopped" if opts.stop.is_set() else "done"
    return stats


def run_forever(bundle: Bundle, opts: WatchOptions, stats: Stats,
                on_tick: Callable[[], None] | None = None) -> Stats:
    """Watch until `opts.stop` is set (Ctrl-C, SIGTERM).

    A bundle replaced in place while watching (`edge learn` swaps the camera's new bundle
    into OUT/bundle atomically) is taken between two batches: the frames waiting, the bursts
    and the background models carry over; a replacement that does not load is logged and the
    bundle in use kept."""
    scorer, stats.provider = open_scorer(bundle, opts)
    follow = opts.follow or bundle.root
    stamp = _bundle_stamp(follow)
    learner: threading.Thread | None = None
    last_check = time.monotonic()
    decider = Decider(scorer, opts, stats)
    with ExitStack() as stack:
        stack.callback(lambda: decider.close())  # the one in use at the end: a swap replaces it
        journal = stack.enter_context(Journal.open(opts.out, exclusive=True))
        # a learning step under way is let finish: a clean stop leaves no half-made bundle
        stack.callback(lambda: learner is not None and learner.join())
        clean_temps(opts.out)
        stats.recount()
        _process(journal, decider, opts, stats)

        def known(p: Path, st: os.stat_result) -> bool:
            return _known(journal, opts.inbox, p, st)

        gate = StabilityGate(settle=opts.settle, give_up=opts.give_up, decode=False)
        written, last_write, results_every = -1, time.monotonic(), RESULTS_EVERY
        last_purge = -PURGE_EVERY
        last_count = time.monotonic()
        with Watcher(opts.inbox, exclude=[opts.out], use_polling=opts.polling,
                     poll_interval=opts.poll_interval, rescan_interval=opts.rescan_interval,
                     maxsize=opts.max_queue, skip=known) as watcher:
            while not opts.stop.is_set():
                for p in watcher.get_batch(64, timeout=0.1):
                    if p not in decider.arrived:
                        stats.seen += 1
                        decider.arrived.setdefault(p, time.monotonic())
                    gate.add(p)
                try:
                    admitted = _admit_verdicts(journal, gate, decider)
                except DiskFullError as e:  # no room to journal them: they wait in the gate
                    _pause(opts, stats, e)
                    continue
                if admitted:
                    _process(journal, decider, opts, stats)
                if time.monotonic() - last_check > opts.bundle_check:
                    last_check = time.monotonic()
                    if opts.learn_every and (learner is None or not learner.is_alive()):
                        learner = _learn_in_background(opts, follow)
                    if (now := _bundle_stamp(follow)) != stamp and now is not None:
                        stamp = now
                        if (swapped := _swap_bundle(follow, decider, opts, stats)) is not None:
                            bundle, decider = swapped
                stats.pending = len(decider.arrived)
                if on_tick:
                    on_tick()
                days = opts.delete_empty_after_days
                if days and time.monotonic() - last_purge > PURGE_EVERY:
                    purge_empties(journal, opts.out, days)
                    last_purge = time.monotonic()
                handled = sum(stats.decisions.values())
                if handled != written and time.monotonic() - last_write > results_every:
                    t0 = time.monotonic()
                    _write_results(journal, opts, bundle, live=True)
                    written, last_write = handled, time.monotonic()
                    # the file holds every frame of the journal, and a journal of weeks takes
                    # seconds to write out: the longer it takes, the rarer it is rewritten
                    results_every = max(RESULTS_EVERY, (last_write - t0) / RESULTS_SHARE)
                if time.monotonic() - last_count > RECOUNT_EVERY:
                    stats.recount()  # a person takes frames out of review/ as they go
                    last_count = time.monotonic()
        _write_results(journal, opts, bundle, live=True)
    return stats


def _bundle_stamp(root: Path) -> tuple[int, int] | None:
    """What changes when a bundle is replaced: its manifest's inode and modification time."""
    try:
        st = (root / MANIFEST).stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


def _learn_in_background(opts: WatchOptions, follow: Path) -> threading.Thread:
    """One `edge learn` step in a thread of its own (it runs the bundle on the answered frames,
    seconds of work the watcher need not wait for); what it installs at `follow` is taken by
    the next bundle check. It learns at most every `learn_every` new answers."""
    from edge.learn import run_learn

    source = follow if (follow / MANIFEST).is_file() else (opts.learn_from or follow)

    def step() -> None:
        try:
            entry = run_learn(opts.out, source, target=follow, every=opts.learn_every,
                              threads=1, providers=opts.providers)
        except Exception as e:  # a failed step never stops the watcher; the next one retries
            log.warning("learning from the answers failed: %s", e)
            return
        if not entry.get("skipped"):
            log.info("learned from %s answers: %s", entry.get("answers"),
                     "installed" if entry.get("install") else "not better, not installed")

    t = threading.Thread(target=step, name="edge-learn", daemon=True)
    t.start()
    return t


def _swap_bundle(root: Path, decider: Decider, opts: WatchOptions,
                 stats: Stats) -> tuple[Bundle, Decider] | None:
    """The bundle now at `root`, opened, with a Decider that carries the frames waiting, the
    bursts and the background models over; None (the one in use kept) if it fails."""
    try:
        new = load_bundle(root)
        scorer, provider = open_scorer(new, opts, decider.scorer.backgrounds, event="swap")
    except (BundleError, RuntimeError, OSError) as e:
        log.warning("bundle %s changed but cannot be used, keeping the one in use: %s",
                    root, e)
        return None
    opts.thresholds = {**new.manifest.thresholds, **opts.threshold_overrides}
    fresh = Decider(scorer, opts, stats)
    fresh.arrived, fresh.recent = decider.arrived, decider.recent
    decider.close()
    stats.provider = provider
    log.info("bundle %s replaced (created %s): thresholds now %s", new.root,
             new.manifest.created, opts.thresholds)
    return new, fresh


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
    log.info("stop: %d frame(s) handled (%s), %d left unreadable%s", sum(d.values()),
             ", ".join(f"{k} {d[k]}" for k in ("tagged", "review", "empty", "quarantine")),
             len(stats.unreadable), f"; results {results}" if results.is_file() else "")


def _nothing_found(inbox: Path, known: int) -> str:
    """What a batch run that found nothing to do says, so an empty card reads as one."""
    from rich.markup import escape

    if known:
        return (f"no new frames in {escape(str(inbox))}: its {known} frame(s) are already "
                "in the journal")
    kinds = ", ".join(e.lstrip(".") for e in EXTS)
    return (f"[yellow]no frames found in {escape(str(inbox))}[/] (looked for {kinds} files, "
            "in it and its subfolders)")


def _watch(bundle: Bundle, opts: WatchOptions, stats: Stats, signals: list[str], *,
           once: bool, tui: bool, console) -> int:
    from rich.live import Live
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from edge.journal import JournalError
    from edge.tui import render

    make_dirs(opts.out)  # OUT's own name survives a power cut, with all below it
    results = opts.out / MD_RESULTS
    try:
        if once:
            with Progress("[progress.description]{task.description}", BarColumn(),
                          MofNCompleteColumn(), TimeRemainingColumn(), console=console,
                          disable=not tui) as bar:
                task = bar.add_task("sorting", total=None)
                run_once(bundle, opts, stats,
                         progress=lambda done, total: bar.update(task, completed=done,
                                                                 total=total))
            console.print(render(stats))
            if not stats.seen and not sum(stats.decisions.values()):
                console.print(_nothing_found(opts.inbox, stats.already_known), soft_wrap=True)
        elif tui:
            with Live(render(stats), console=console, refresh_per_second=2) as live:
                run_forever(bundle, opts, stats, on_tick=lambda: live.update(render(stats)))
        else:
            run_forever(bundle, opts, stats)
    except KeyboardInterrupt:
        console.print("stopped at once: every frame handled so far is in the journal; the "
                      "results file is brought up to date by the next run")
        if results.is_file():
            console.print(f"results (from before this stop): {results}", soft_wrap=True)
        return 130
    except JournalError as e:
        console.print(f"[red]journal:[/] {escape(str(e))}")
        return 1
    except (DiskFullError, SinkPermissionError) as e:  # --once: say so and stop, not wait
        console.print(f"[red]stopped:[/] {escape(str(e))}. Nothing is lost: the frames not "
                      "sorted yet are still in the inbox; run again once this is fixed.")
        return 1
    finally:
        _log_stop(stats, results)
    if signals:
        console.print(f"stopped ({signals[0]}): {sum(stats.decisions.values())} frame(s) "
                      "handled this run, all in the journal and the results file"
                      + (f"; {stats.pending} not sorted yet: run again to sort them"
                         if once and stats.pending else ""))
    if results.is_file():
        console.print(f"results: {results}", soft_wrap=True)  # a path in one piece
    if stats.unreadable:
        first = ", ".join(escape(f) for f in list(stats.unreadable)[:3])
        console.print(f"[red]{len(stats.unreadable)} frame(s) could not be read[/] and were "
                      f"left in the inbox ({first}{', ...' if len(stats.unreadable) > 3 else ''}"
                      "); fix their permissions and run again")
        return 3
    return 0
