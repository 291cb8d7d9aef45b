"""Decide what happens to a frame: set aside as empty, tag it, or keep it for a person.

A frame is "empty" only on evidence: the classifier calls an empty class with at least the
`empty` probability and little of the frame is foreground. A quiet foreground alone is never
enough: small, still, distant and night animals are quiet too (on one real camera 56 frames
with animals, people or vehicles had under 2 % foreground), and a frame wrongly set aside as
empty is as bad as a lost one. So a bundle without an empty class sets nothing aside; its
quiet frames go to review. Otherwise a frame is "tagged" when its fused confidence reaches
the `tag` threshold, and kept for "review" when it does not. Frames of one burst (same camera,
a short gap in time) are then decided together: a burst with an animal in any frame is not
empty.

A burst also ends after `max_frames` frames. Cameras shoot bursts of a few frames; without a
cap, frames whose only time is the file's (no EXIF) and that were copied in one go lie seconds
apart and would chain into one burst the size of the card, where one animal makes every empty
frame "review".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from edge.journal import Verdict
from edge.thresholds import Thresholds

BURST_FRAMES = 10  # the most frames one burst holds


@dataclass(frozen=True)
class Evidence:
    """What the policy looks at for one frame."""

    camera: str
    time: datetime | None
    label: str
    is_empty_class: bool
    is_human: bool
    softmax: float
    fused: float
    foreground: float  # share of the frame that is foreground (0..1)
    background_ready: bool


def decide(e: Evidence, thresholds: Thresholds | Mapping[str, float]) -> Verdict:
    """The decision for one frame on its own. A plain mapping is laid over the defaults of
    edge.thresholds (keys it leaves out take them)."""
    t = Thresholds.of(thresholds)
    if e.is_empty_class:
        quiet = e.foreground < t.empty_foreground
        # not convinced, or something stands in front of the camera: a person looks
        return Verdict.EMPTY if e.softmax >= t.empty and quiet else Verdict.REVIEW
    return Verdict.TAGGED if e.fused >= t.tag else Verdict.REVIEW


def burst_ids(
    frames: Sequence[tuple[str, datetime | None]],
    gap_seconds: float,
    max_frames: int = BURST_FRAMES,
) -> list[int]:
    """A burst id per (camera, time): same camera, at most `gap_seconds` after the previous
    frame, and at most `max_frames` frames in one burst (in time order; frames of one time in
    the order given, the capture order).

    The one rule for the watcher's bursts (:func:`bursts`) and the eventIDs of a Camtrap DP
    export (edge.camtrapdp), so a package's events are the bursts the triage decided on.
    Frames without a time each form their own burst.
    """
    order = sorted(range(len(frames)), key=lambda i: (frames[i][0], frames[i][1] or datetime.min))
    ids = [0] * len(frames)
    burst, size = -1, 0
    prev: tuple[str, datetime | None] | None = None
    for i in order:
        camera, t = frames[i]
        same = (
            prev is not None
            and t is not None
            and prev[1] is not None
            and prev[0] == camera
            and (t - prev[1]).total_seconds() <= gap_seconds
            and size < max_frames
        )
        if not same:
            burst, size = burst + 1, 0
        ids[i] = burst
        size += 1
        prev = (camera, t)
    return ids


def bursts(
    evidence: Sequence[Evidence], gap_seconds: float, max_frames: int = BURST_FRAMES
) -> list[int]:
    """A burst id per frame, by :func:`burst_ids` on the frames' camera and time."""
    return burst_ids([(e.camera, e.time) for e in evidence], gap_seconds, max_frames)


def decide_all(
    evidence: Sequence[Evidence],
    thresholds: Thresholds | Mapping[str, float],
    *,
    burst_gap_seconds: float = 10.0,
    burst_frames: int = BURST_FRAMES,
    earlier: Sequence[Evidence] = (),
) -> list[Verdict]:
    """Decide every frame, then lift "empty" to "review" in bursts where another frame is not
    empty: an animal that walks out of frame in the third shot was still there.

    `earlier`: frames of a previous batch; they take part in the bursts, so a burst split
    across batches is still one, but get no decision of their own here.
    """
    every = [*earlier, *evidence]
    t = Thresholds.of(thresholds)  # checked once, not per frame
    decisions = [decide(e, t) for e in every]
    ids = bursts(every, burst_gap_seconds, burst_frames)
    busy = {b for b, d in zip(ids, decisions, strict=True) if d != Verdict.EMPTY}
    n = len(earlier)
    return [
        Verdict.REVIEW if d == Verdict.EMPTY and b in busy else d
        for b, d in zip(ids[n:], decisions[n:], strict=True)
    ]
