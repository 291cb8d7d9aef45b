"""Decide what happens to a frame: set aside as empty, tag it, or keep it for a person.

A frame is "empty" when the classifier calls an empty class confidently and little of the frame
is foreground (or, for a bundle without an empty class, when the camera's background model is
ready and sees nothing). Otherwise it is "tagged" when its fused confidence reaches the `tag`
threshold, and kept for "review" when it does not. Frames of one burst (same camera, a short
gap in time) are then decided together: a burst with an animal in any frame is not empty.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

Decision = Literal["empty", "tagged", "review", "quarantine"]

DEFAULTS = {"tag": 0.7, "empty": 0.6, "empty_foreground": 0.02}


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


def decide(e: Evidence, thresholds: dict[str, float]) -> Decision:
    """The decision for one frame on its own."""
    t = {**DEFAULTS, **thresholds}
    quiet = e.foreground < t["empty_foreground"]
    if e.is_empty_class and e.softmax >= t["empty"] and quiet:
        return "empty"
    if e.is_empty_class and not quiet:
        return "review"  # the classifier sees nothing where something is in front of the camera
    if e.background_ready and quiet and not e.is_empty_class and e.fused < t["tag"]:
        return "empty"
    return "tagged" if e.fused >= t["tag"] else "review"


def bursts(evidence: Sequence[Evidence], gap_seconds: float) -> list[int]:
    """A burst id per frame: same camera and at most `gap_seconds` after the previous frame.

    Frames without a time each form their own burst.
    """
    order = sorted(
        range(len(evidence)),
        key=lambda i: (evidence[i].camera, evidence[i].time or datetime.min),
    )
    ids = [0] * len(evidence)
    burst, prev = -1, None
    for i in order:
        e = evidence[i]
        same = (
            prev is not None
            and e.time is not None
            and prev.time is not None
            and prev.camera == e.camera
            and (e.time - prev.time).total_seconds() <= gap_seconds
        )
        if not same:
            burst += 1
        ids[i] = burst
        prev = e
    return ids


def decide_all(
    evidence: Sequence[Evidence], thresholds: dict[str, float], *, burst_gap_seconds: float = 10.0
) -> list[Decision]:
    """Decide every frame, then lift "empty" to "review" in bursts where another frame is not
    empty: an animal that walks out of frame in the third shot was still there."""
    decisions = [decide(e, thresholds) for e in evidence]
    ids = bursts(evidence, burst_gap_seconds)
    pairs = list(zip(ids, decisions, strict=True))
    busy = {b for b, d in pairs if d != "empty"}
    return ["review" if d == "empty" and b in busy else d for b, d in pairs]
