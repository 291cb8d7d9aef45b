"""The triage stage of a batch: scored frames in, one journal Decision each out.

`decide_batch` is a pure function of its arguments (no files, no clocks, no state): what a
frame showed (edge.scorer.Scored), what the loader learnt of it (edge.loader.Taken) and the
frames of the same cameras just before (for bursts that span two batches) give the verdict
and every journal column. The memory of those earlier frames is `Bursts`, kept by the loop.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from edge.bundle import InputSpec
from edge.journal import Decision, Verdict
from edge.loader import Taken
from edge.scorer import Scored
from edge.thresholds import Thresholds
from edge.triage import BURST_FRAMES, Evidence, bursts, decide_all


def evidence_of(camera: str, time: datetime | None, s: Scored) -> Evidence:
    """What the triage looks at for one frame."""
    return Evidence(
        camera=camera,
        time=time,
        label=s.score.label,
        is_empty_class=s.is_empty_class,
        is_human=s.is_human,
        softmax=s.score.softmax,
        fused=s.fused,
        foreground=s.score.foreground_fraction,
        background_ready=s.background_ready,
    )


def decide_batch(
    cameras: Sequence[str],
    taken: Sequence[Taken],
    scored: Sequence[Scored],
    thresholds: Thresholds | Mapping[str, float],
    *,
    burst_gap: float = 10.0,
    burst_frames: int = BURST_FRAMES,
    earlier: Sequence[Evidence] = (),
    overlay_spec: InputSpec | None = None,
) -> tuple[list[Decision], list[Evidence]]:
    """The Decision of each frame, and the Evidence it was decided on (for `Bursts.add`).

    `earlier`: the cameras' frames just before these (they take part in bursts, get no
    decision here). `overlay_spec`: the classifier's input; when given, a review frame keeps
    what drawing its overlay needs (edge.overlay.pack_overlay), to be drawn when someone looks.
    """
    if not len(cameras) == len(taken) == len(scored):
        raise ValueError(f"{len(cameras)} cameras, {len(taken)} frames, {len(scored)} scores")
    evidence = [evidence_of(c, t.time, s) for c, t, s in zip(cameras, taken, scored, strict=True)]
    verdicts = decide_all(
        evidence,
        thresholds,
        burst_gap_seconds=burst_gap,
        burst_frames=burst_frames,
        earlier=earlier,
    )
    decisions = [
        _decision(Verdict(v), t, s, overlay_spec)
        for v, t, s in zip(verdicts, taken, scored, strict=True)
    ]
    return decisions, evidence


def _decision(verdict: Verdict, taken: Taken, s: Scored, spec: InputSpec | None) -> Decision:
    score = s.score
    data = None
    if verdict == Verdict.REVIEW and spec is not None:
        from edge.overlay import pack_overlay

        data = pack_overlay(
            s.cam,
            score.mask,
            spec,
            label=f"{score.label}  ({score.mask_source} mask)",
            scores={
                "softmax": score.softmax,
                "overmap": score.overmap,
                "fused": s.fused,
                "fg": score.foreground_fraction,
            },
        )
    guess = s.guess
    return Decision(
        verdict,
        label=score.label,
        class_index=score.class_index,
        softmax=score.softmax,
        overmap=score.overmap,
        confidence=s.fused,
        captured_at=taken.time,
        time_source=taken.time_source,
        width=taken.width,
        height=taken.height,
        entropy=s.entropy,
        foreground=score.foreground_fraction,
        mask_source=score.mask_source,
        measure=score.measure,
        species_guess=guess[0] if guess else None,
        species_guess_p=round(guess[1], 4) if guess else None,
        top_k=tuple((n, float(p)) for n, p in score.top_k),
        overlay_data=data,
    )


@dataclass
class Bursts:
    """The last frames of each camera, so a burst that spans two batches is still one."""

    max_frames: int = BURST_FRAMES
    recent: dict[str, deque[Evidence]] = field(default_factory=dict)

    def earlier(self, cameras: Iterable[str]) -> list[Evidence]:
        return [e for c in dict.fromkeys(cameras) for e in self.recent.get(c, ())]

    def add(self, evidence: Iterable[Evidence], gap_seconds: float) -> None:
        """Remember the frames of each camera's burst still open: only those, so the next
        batch counts a burst's frames against `max_frames` from where it really began."""
        cameras = set()
        for e in evidence:
            if e.time is not None:
                self.recent.setdefault(e.camera, deque()).append(e)
                cameras.add(e.camera)
        for c in cameras:  # the open burst holds at most max_frames: the rest is let go
            kept = self.recent[c]
            ids = bursts(list(kept), gap_seconds, self.max_frames)
            while ids and ids[0] != ids[-1]:
                kept.popleft()
                ids.pop(0)
