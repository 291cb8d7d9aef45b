"""What a ranger sees while the watcher runs: a rich live dashboard fed by :class:`Stats`."""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from edge.sink import TEMP_SUFFIX

DECISION_STYLE = {"empty": "dim", "tagged": "green", "review": "yellow", "quarantine": "red"}


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

    def record(self, file: str, label: str, decision: str, confidence: float,
               latency: float) -> None:
        self.decisions[decision] += 1
        self.review_queue += decision == "review"
        if decision not in ("empty", "quarantine"):
            self.species[label] += 1
        self.latencies.append(latency)
        self.done_times.append(time.monotonic())
        self.recent.appendleft((file, label, decision, confidence))

    def recount(self) -> None:
        """Count the frames in OUT/review again: a person works through them between runs
        and while the watcher runs; their sidecars and our temp files are not frames."""
        n = 0
        for _folder, _dirs, files in os.walk(self.out / "review"):
            n += sum(not f.endswith((".json", TEMP_SUFFIX)) for f in files)
        self.review_queue = n

    def throughput(self, window: float = 30.0) -> float:
        """Frames per second over the last `window` seconds."""
        now = time.monotonic()
        n = sum(1 for t in self.done_times if now - t <= window)
        return n / max(1.0, min(window, now - self.started))


def _latency(stats: Stats) -> str:
    if not stats.latencies:
        return "-"
    p50, p95 = np.percentile(np.asarray(stats.latencies), [50, 95])
    return f"p50 {p50:.2f}s  p95 {p95:.2f}s"


def render(stats: Stats) -> Group:
    """The dashboard: totals, decisions, species, the last decisions."""
    free = shutil.disk_usage(stats.out).free if stats.out.exists() else 0
    head = Table.grid(padding=(0, 3))
    for _ in range(4):
        head.add_column()
    head.add_row(
        Text(f"seen {stats.seen} this run", style="bold"),
        f"review queue {stats.review_queue}",
        f"{stats.throughput():.1f} frames/s",
        f"latency {_latency(stats)}",
    )
    head.add_row(f"provider {stats.provider}", f"disk free {free / 2**30:.1f} GiB",
                 f"status {stats.status}",
                 Text(f"unreadable {len(stats.unreadable)}", style="red")
                 if stats.unreadable else "")
    decisions = Table(title="decisions", show_edge=False)
    decisions.add_column("decision")
    decisions.add_column("frames", justify="right")
    for d in ("tagged", "review", "empty", "quarantine"):
        decisions.add_row(Text(d, style=DECISION_STYLE[d]), str(stats.decisions[d]))
    species = Table(title="species", show_edge=False)
    species.add_column("label")
    species.add_column("frames", justify="right")
    for name, n in stats.species.most_common(8):
        species.add_row(name, str(n))
    recent = Table(title="last decisions", show_edge=False, expand=True)
    recent.add_column("frame", overflow="ellipsis", no_wrap=True)
    recent.add_column("label")
    recent.add_column("decision")
    recent.add_column("conf", justify="right")
    for file, label, decision, conf in stats.recent:
        recent.add_row(file, label, Text(decision, style=DECISION_STYLE.get(decision, "")),
                       f"{conf:.2f}")
    body = Table.grid(padding=(0, 4))
    body.add_row(decisions, species)
    return Group(Panel(head, title="overmap-edge watch"), body, recent)
