"""The bundle a live watcher follows: `edge learn` swaps a camera's better bundle into place
(atomically), and the watcher takes it between two batches; with `--learn-every` learning
itself runs here, in a thread beside the watcher."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from edge.bundle import MANIFEST, Bundle, BundleError, load_bundle

if TYPE_CHECKING:
    from edge.loop import Pipeline
    from edge.tui import Stats
    from edge.watch import WatchOptions

log = logging.getLogger("edge.watch")


def bundle_stamp(root: Path) -> tuple[int, int] | None:
    """What changes when a bundle is replaced: its manifest's inode and modification time."""
    try:
        st = (root / MANIFEST).stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


class Follower:
    """Looks for a new bundle at `root` every `opts.bundle_check` seconds, and starts a
    learning step when asked to learn and none is under way."""

    def __init__(self, root: Path, opts: WatchOptions) -> None:
        self.root = root
        self.opts = opts
        self.stamp = bundle_stamp(root)
        self.learner: threading.Thread | None = None

    def changed(self) -> bool:
        """A learning step started if due; True when the bundle at `root` was replaced."""
        if self.opts.learn_every and (self.learner is None or not self.learner.is_alive()):
            self.learner = learn_in_background(self.opts, self.root)
        now = bundle_stamp(self.root)
        if now is None or now == self.stamp:
            return False
        self.stamp = now
        return True

    def join(self) -> None:
        """Let a learning step under way finish: a clean stop leaves no half-made bundle."""
        if self.learner is not None:
            self.learner.join()


def learn_in_background(opts: WatchOptions, follow: Path) -> threading.Thread:
    """One `edge learn` step in a thread of its own (it runs the bundle on the answered frames,
    seconds of work the watcher need not wait for); what it installs at `follow` is taken by
    the next bundle check. It learns at most every `learn_every` new answers."""
    from edge.learn import run_learn

    source = follow if (follow / MANIFEST).is_file() else (opts.learn_from or follow)

    def step() -> None:
        try:
            entry = run_learn(
                opts.out,
                source,
                target=follow,
                every=opts.learn_every,
                threads=1,
                providers=opts.providers,
            )
        except Exception as e:  # a failed step never stops the watcher; the next one retries
            log.warning("learning from the answers failed: %s", e)
            return
        if not entry.get("skipped"):
            log.info(
                "learned from %s answers: %s",
                entry.get("answers"),
                "installed" if entry.get("install") else "not better, not installed",
            )

    t = threading.Thread(target=step, name="edge-learn", daemon=True)
    t.start()
    return t


def swap_bundle(
    root: Path, pipeline: Pipeline, opts: WatchOptions, stats: Stats
) -> tuple[Bundle, Pipeline] | None:
    """The bundle now at `root`, opened, with a pipeline that carries the frames waiting, the
    bursts and the background models over; None (the one in use kept) if it fails."""
    from edge.loop import Pipeline, open_scorer

    try:
        new = load_bundle(root)
        scorer, provider = open_scorer(new, opts, pipeline.scorer.backgrounds, event="swap")
    except (BundleError, RuntimeError, OSError) as e:
        log.warning("bundle %s changed but cannot be used, keeping the one in use: %s", root, e)
        return None
    opts.thresholds = {**new.manifest.thresholds, **opts.threshold_overrides}
    fresh = Pipeline(scorer, opts, stats)
    fresh.carry(pipeline)
    pipeline.close()
    stats.provider = provider
    log.info(
        "bundle %s replaced (created %s): thresholds now %s",
        new.root,
        new.manifest.created,
        opts.thresholds,
    )
    return new, fresh
