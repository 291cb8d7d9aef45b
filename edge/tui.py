"""What a ranger sees while the watcher runs: a rich live dashboard fed by :class:`Stats`."""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from edge.journal import Verdict, camera_of
from edge.sink import TEMP_SUFFIX

DECISION_STYLE = {
    Verdict.EMPTY: "dim",
    Verdict.TAGGED: "green",
    Verdict.REVIEW: "yellow",
    Verdict.QUARANTINE: "red",
}
RATE_WINDOW = 20.0  # seconds: frames/s is what the watcher does now, not since it started
ROWS = 5  # species, cameras and last decisions shown: the dashboard fits 80x24


@dataclass
class Stats:
    """Counters the watcher updates after every batch; cheap to render."""

    out: Path
    provider: str = "?"
    started: float = field(default_factory=time.monotonic)
    seen: int = 0
    decisions: Counter[str] = field(default_factory=Counter)
    species: Counter[str] = field(default_factory=Counter)
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=500))
    recent: deque[tuple[str, str, str, float]] = field(default_factory=lambda: deque(maxlen=8))
    done_times: deque[float] = field(default_factory=lambda: deque(maxlen=500))
    status: str = "watching"
    unreadable: dict[str, str] = field(default_factory=dict)  # left in the inbox: file -> why
    review_queue: int = 0  # frames waiting in OUT/review, earlier runs' too (see recount)
    already_known: int = 0  # a batch run's frames skipped as already in the journal
    pending: int = 0  # found and not decided yet (waiting to be whole, or in the pipeline)
    cameras: dict[str, Counter[str]] = field(default_factory=dict)  # camera -> decisions
    last_frame: float | None = None  # wall-clock time the last frame was decided

    def record(
        self, file: str, label: str, decision: str, confidence: float, latency: float
    ) -> None:
        self.decisions[decision] += 1
        self.cameras.setdefault(camera_of(file) or "(top)", Counter())[decision] += 1
        self.review_queue += decision == Verdict.REVIEW
        if decision not in (Verdict.EMPTY, Verdict.QUARANTINE):
            self.species[label] += 1
        self.latencies.append(latency)
        self.done_times.append(time.monotonic())
        self.last_frame = time.time()
        self.recent.appendleft((file, label, decision, confidence))

    def recount(self) -> None:
        """Count the frames in OUT/review again: a person works through them between runs
        and while the watcher runs; their sidecars and our temp files are not frames."""
        n = 0
        for _folder, _dirs, files in os.walk(self.out / "review"):
            n += sum(not f.endswith((".json", TEMP_SUFFIX)) for f in files)
        self.review_queue = n

    def throughput(self, window: float = RATE_WINDOW) -> float:
        """Frames per second over the last `window` seconds: the frames finished after the
        first one in the window, over the time since it. Frames finish in batches, so the
        first batch's own work began before the window saw it: leaving it out measures a
        burst at its speed, and the rate falls to 0 within `window` once the frames stop."""
        now = time.monotonic()
        times = [t for t in self.done_times if now - t <= window]
        if not times:
            return 0.0
        after = sum(t > times[0] for t in times)
        if after:
            return after / max(now - times[0], 1e-3)
        return len(times) / max(1.0, min(window, now - self.started))  # one batch so far


def _latency(stats: Stats) -> str:
    if not stats.latencies:
        return "-"
    p50, p95 = np.percentile(np.asarray(stats.latencies), [50, 95])
    return f"p50 {p50:.2f}s p95 {p95:.2f}s"


def _clock(t: float | None) -> str:
    """When the last frame came: the time today, the date and time before."""
    if t is None:
        return "-"
    when = datetime.fromtimestamp(t)
    return when.strftime("%H:%M:%S" if when.date() == datetime.now().date() else "%m-%d %H:%M")


def _uptime(stats: Stats) -> str:
    up = timedelta(seconds=int(time.monotonic() - stats.started))
    if up.days:
        return f"{up.days}d {up.seconds // 3600:02d}:{up.seconds // 60 % 60:02d}"
    return str(up)


def _header(stats: Stats) -> Group:
    """Three columns and a status line that never wrap: at 80 columns each item stays on its
    line (a long one is cut with an ellipsis rather than broken over two)."""
    free = shutil.disk_usage(stats.out).free if stats.out.exists() else 0
    grid = Table.grid(padding=(0, 2))
    for _ in range(3):
        grid.add_column(no_wrap=True, overflow="ellipsis")
    grid.add_row(
        Text(f"seen {stats.seen} this run", style="bold"),
        f"pending {stats.pending}",
        f"{stats.throughput():.1f} frames/s",
    )
    grid.add_row(
        f"review queue {stats.review_queue}",
        f"last frame {_clock(stats.last_frame)}",
        f"up {_uptime(stats)}",
    )
    grid.add_row(
        f"latency {_latency(stats)}",
        f"provider {stats.provider.removesuffix('ExecutionProvider')}",
        f"disk free {free / 2**30:.1f} GiB",
    )
    status = Text(f"status {stats.status}", no_wrap=True, overflow="ellipsis")
    if stats.unreadable:
        status.append(f"   unreadable {len(stats.unreadable)}", style="red")
    return Group(grid, status)


def _counts(title: str, key: str, rows: list[tuple[str, int, int]]) -> Table:
    t = Table(title=title, show_edge=False)
    t.add_column(key, no_wrap=True, overflow="ellipsis", max_width=18)
    t.add_column("frames", justify="right")
    t.add_column("review", justify="right")
    for name, n, review in rows[:ROWS]:
        t.add_row(name, str(n), str(review))
    return t


def render(stats: Stats) -> Group:
    """The dashboard: totals, decisions, species, cameras, the last decisions; 80x24."""
    decisions = Table(title="decisions", show_edge=False)
    decisions.add_column("decision")
    decisions.add_column("frames", justify="right")
    for d in Verdict:
        decisions.add_row(Text(d, style=DECISION_STYLE[d]), str(stats.decisions[d]))
    species = Table(title="species", show_edge=False)
    species.add_column("label", no_wrap=True, overflow="ellipsis", max_width=18)
    species.add_column("frames", justify="right")
    for name, n in stats.species.most_common(ROWS):
        species.add_row(name, str(n))
    cams = sorted(stats.cameras.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
    rows = [(c, sum(n.values()), n[Verdict.REVIEW]) for c, n in cams]
    cameras = _counts("cameras", "camera", rows)
    recent = Table(title="last decisions", show_edge=False, expand=True)
    recent.add_column("frame", overflow="ellipsis", no_wrap=True)
    recent.add_column("label", overflow="ellipsis", no_wrap=True)
    recent.add_column("decision")
    recent.add_column("conf", justify="right")
    for file, label, decision, conf in list(stats.recent)[:ROWS]:
        recent.add_row(
            file, label, Text(decision, style=DECISION_STYLE.get(decision, "")), f"{conf:.2f}"
        )
    body = Table.grid(padding=(0, 3))
    body.add_row(decisions, species, cameras)
    where = Text(f"review folder {stats.out / 'review'}", overflow="fold")
    return Group(Panel(_header(stats), title="overmap-edge watch"), where, body, recent)


@contextmanager
def progress_bar(console: Console, *, enabled: bool = True) -> Iterator[Callable[[int, int], None]]:
    """A run over a card: a bar of frames sorted; yields what to call with (done, total)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
    ) as bar:
        task = bar.add_task("sorting", total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


@contextmanager
def dashboard(console: Console, stats: Stats) -> Iterator[Callable[[], None]]:
    """The live dashboard while watching; yields what to call after each turn of the loop."""
    from rich.live import Live

    with Live(render(stats), console=console, refresh_per_second=2) as live:
        yield lambda: live.update(render(stats))
