"""The review queue, read from the journal: frames the watcher kept for a person, whose file
still lies in OUT/review, grouped per camera and per burst, each with its scores in words.

Bursts are edge.triage's (same camera, at most `gap` seconds apart, at most `max_frames`),
taken over the frames waiting here: those are the ones a person answers at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from edge.journal import Frame, Journal
from edge.paths import resolve_inside
from edge.triage import BURST_FRAMES, Evidence, bursts

REVIEW = "review"
OVERLAYS = "overlays"
SURE, FAIRLY_SURE = 0.9, 0.7  # softmax of the top class
LOOKED_AT, LOOKED_PARTLY = 0.6, 0.3  # Over-MAP: the share of the map on the animal
EMPTY_NAMES = ("empty", "blank", "background", "nothing", "none")


@dataclass(frozen=True)
class Item:
    """One frame waiting for review, as the page shows it."""

    id: int
    relpath: str
    camera: str
    dest: str  # relative to OUT: review/...
    label: str | None
    softmax: float | None
    overmap: float | None
    confidence: float | None
    top: tuple[tuple[str, float], ...]
    time: datetime | None
    overlay: str | None  # relative to OUT, when the watcher wrote one and it is there
    words: str


@dataclass(frozen=True)
class Burst:
    key: str  # "<camera index>-<burst index>", unique on the page
    camera: str
    items: tuple[Item, ...]


@dataclass(frozen=True)
class Camera:
    name: str
    bursts: tuple[Burst, ...]

    @property
    def count(self) -> int:
        return sum(len(b.items) for b in self.bursts)


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _pct(p: float) -> str:
    return f"{round(100 * p)} %"


def is_empty_label(label: str | None, empty_classes: tuple[str, ...] = ()) -> bool:
    """A label that means "nothing there": the bundle's empty classes, else by name."""
    if label is None:
        return False
    return label in empty_classes or label.lower() in EMPTY_NAMES


def words(label: str | None, softmax: float | None, overmap: float | None) -> str:
    """The scores as a ranger reads them: how sure the model is (softmax) and whether it
    looked at the animal (Over-MAP), e.g. "The model is fairly sure it is a bobcat (82 %)
    and looked at the animal." """
    if label is None or softmax is None:
        return "The model gave no label for this frame."
    name = label.replace("_", " ")
    empty = is_empty_label(label)
    claim = "the frame is empty" if empty else f"it is {_article(name)} {name}"
    guess = "empty" if empty else f"{_article(name)} {name}"
    if softmax >= SURE:
        sure = f"The model is sure {claim} ({_pct(softmax)})"
    elif softmax >= FAIRLY_SURE:
        sure = f"The model is fairly sure {claim} ({_pct(softmax)})"
    else:
        sure = f"The model is unsure (its best guess: {guess}, {_pct(softmax)})"
    confident = softmax >= FAIRLY_SURE
    if overmap is None:
        return sure + "."
    if empty:
        if overmap >= LOOKED_PARTLY:
            return sure + ", but something stands where it looked: check for an animal."
        return sure + "."
    if overmap >= LOOKED_AT:
        return sure + " and looked at the animal."
    if overmap >= LOOKED_PARTLY:
        return sure + (", but" if confident else ":") + " it looked only partly at the animal."
    return (
        sure
        + (", but" if confident else ":")
        + " it looked at the grass and background, not the animal."
    )


def _item(out: Path, f: Frame) -> Item:
    overlay = f.overlay
    if overlay and resolve_inside(out, overlay, under=(OVERLAYS,)) is None:
        overlay = None  # not written (overlays off) or gone: the page renders one
    assert f.dest is not None
    return Item(
        id=f.id,
        relpath=f.relpath,
        camera=f.camera,
        dest=f.dest,
        label=f.label,
        softmax=f.softmax,
        overmap=f.overmap,
        confidence=f.confidence,
        top=f.top_k,
        time=f.captured_at,
        overlay=overlay,
        words=words(f.label, f.softmax, f.overmap),
    )


def waiting(journal: Journal, out: Path) -> list[Frame]:
    """The journal's review frames (done, not answered) whose file is a regular file inside
    OUT/review: a frame a person moved away by hand, or a link leading out of OUT, is not."""
    return [
        f
        for f in journal.review_queue()
        if f.dest and resolve_inside(out, f.dest, under=(REVIEW,)) is not None
    ]


def load_queue(
    journal: Journal, out: Path, *, gap_seconds: float = 10.0, max_frames: int = BURST_FRAMES
) -> list[Camera]:
    """The queue per camera (sorted by name), per burst and frame in time order."""
    items = [_item(out, f) for f in waiting(journal, out)]
    evidence = [
        Evidence(
            camera=i.camera,
            time=i.time,
            label=i.label or "",
            is_empty_class=False,
            is_human=False,
            softmax=0.0,
            fused=0.0,
            foreground=0.0,
            background_ready=False,
        )
        for i in items
    ]
    ids = bursts(evidence, gap_seconds, max_frames)
    groups: dict[str, dict[int, list[Item]]] = {}
    for item, b in zip(items, ids, strict=True):
        groups.setdefault(item.camera, {}).setdefault(b, []).append(item)
    cameras = []
    for c, name in enumerate(sorted(groups)):
        by_burst = groups[name]
        ordered = sorted(
            by_burst.values(), key=lambda its: (its[0].time or datetime.min, its[0].id)
        )
        cameras.append(
            Camera(
                name,
                tuple(
                    Burst(
                        f"{c}-{k}",
                        name,
                        tuple(sorted(its, key=lambda i: (i.time or datetime.min, i.id))),
                    )
                    for k, its in enumerate(ordered)
                ),
            )
        )
    return cameras
