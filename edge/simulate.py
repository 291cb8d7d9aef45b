"""Replay a labelled stream through the watcher's decisions with a simulated reviewer.

Frames go in the CSV's order, in batches, through the watcher's own path (edge.scorer.Scorer
with per-camera background models, then edge.triage.decide_all with bursts and the bundle's
thresholds). A reviewer answers every "review" frame with the CSV's label, and every `every`
answers the bundle learns from them (edge.learn.learn_step), installing the new head, fused
confidence and thresholds only when the step finds them better. What comes out is what a
ranger would live with: the share of frames a person looked at, the wrong labels left among
the frames nobody looked at, and the animals, people and vehicles set aside as empty.

Measured in the same run, on the same frames: reviewing everything; a fixed softmax threshold
(0.7) with no learning; and the bundle as shipped, with its own thresholds and no learning.

When the bundle's first labels (its training set's features) include frames of the stream
(the same files, or the same source), they are left out and the starting head is refitted
without them (`leave_stream_out`), so the figures are those of a camera the bundle has never
seen.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from edge.background import CameraBackgrounds
from edge.bundle import Bundle, load_bundle
from edge.decide import Bursts, evidence_of
from edge.decode import decode_frame
from edge.exif import exif_time
from edge.learn import (
    Examples,
    Policy,
    class_index,
    empty_indices,
    first_labels,
    held_back,
    jsonable,
    learn_step,
    policy_of,
)
from edge.linear_head import apply_head, fit_head
from edge.overmap import softmax
from edge.runtime import Outputs, Runtime
from edge.scorer import Scorer
from edge.triage import BURST_FRAMES, decide_all

SOFTMAX_TAG = 0.7  # the fixed-threshold baseline


@dataclass(frozen=True)
class Row:
    file: str
    source: str
    label: str  # the CSV's label
    y: int  # its class in the bundle
    camera: str
    time: datetime | None


def read_stream(
    labels_csv: Path,
    classes: Sequence[str],
    empty_classes: Sequence[str],
    *,
    source: str | None = None,
    images_root: Path | None = None,
) -> tuple[list[Row], int]:
    """The CSV's frames in order (of `source` only, when given) whose label the bundle has a
    class for, and how many were left out for want of one. The time: the CSV's `datetime`,
    else the frame's EXIF time, else none (the frame is then its own burst: a copied file's
    modification time says nothing about when it was taken)."""
    rows, skipped = [], 0
    with Path(labels_csv).open(newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            if source and r.get("source") != source:
                continue
            k = class_index(r["label"], classes, empty_classes)
            if k is None:
                skipped += 1
                continue
            t = _time(r.get("datetime") or "")
            if t is None and images_root is not None:
                t = exif_time(images_root / r["file"])
            rows.append(
                Row(
                    r["file"],
                    r.get("source") or "",
                    r["label"],
                    k,
                    r.get("camera_or_sequence") or Path(r["file"]).parent.as_posix(),
                    t,
                )
            )
    return rows, skipped


def _time(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.strip()) if text.strip() else None
    except ValueError:
        return None


def figures(frames: Sequence[dict[str, Any]], empty_classes: Sequence[str]) -> dict[str, Any]:
    """reviewed_share, residual_error (wrong labels among frames not reviewed, over all
    frames), empty_lost (non-empty frames set aside as empty, over non-empty frames) and the
    reviewed share in each quarter of the stream, from a frames list (file, label,
    final_label, reviewed, decision): anyone can recompute them."""
    n = len(frames)
    reviewed = sum(bool(f["reviewed"]) for f in frames)
    wrong = sum(not f["reviewed"] and f["final_label"] != f["label"] for f in frames)
    non_empty = [f for f in frames if f["label"] not in empty_classes]
    lost = sum(f["decision"] == "empty" for f in non_empty)
    return {
        "n_frames": n,
        "reviewed": reviewed,
        "reviewed_share": reviewed / max(n, 1),
        "residual_errors": wrong,
        "residual_error": wrong / max(n, 1),
        "non_empty": len(non_empty),
        "empty_lost_frames": lost,
        "empty_lost": lost / max(len(non_empty), 1),
        # does a person review less as the bundle learns? the share in each quarter
        "reviewed_by_quarter": [
            sum(bool(f["reviewed"]) for f in q) / len(q)
            for q in np.array_split(np.asarray(frames, object), 4)
            if len(q)
        ],
    }


@dataclass
class _Track:
    """One policy replayed over the stream: its scorer (own background models), thresholds,
    bursts' recent frames, and the frames as decided."""

    name: str
    scorer: Scorer
    policy: Policy
    softmax_only: bool = False
    recent: Bursts = field(default_factory=Bursts)  # each camera's open burst, as the watcher
    frames: list[dict[str, Any]] = field(default_factory=list)

    def outputs(self, base: Outputs) -> Outputs:
        """The policy's outputs: the starting ones (`base`) until a head is learned."""
        return base if self.policy.weight is None else _head_outputs(self.policy, base)

    def decide(
        self, rows: Sequence[Row], images: Sequence[np.ndarray], base: Outputs, burst_gap: float
    ) -> tuple[list[str], Outputs]:
        out = self.outputs(base)
        cameras = [r.camera for r in rows]
        scored = self.scorer.score(images, cameras, outputs=out)
        evidence = [
            evidence_of(c, r.time, s) for c, r, s in zip(cameras, rows, scored, strict=True)
        ]
        if self.softmax_only:  # the baseline: the classifier's own softmax in place of fused
            evidence = [replace(e, fused=e.softmax) for e in evidence]
        verdicts = decide_all(
            evidence,
            self.policy.thresholds,
            burst_gap_seconds=burst_gap,
            burst_frames=BURST_FRAMES,
            earlier=self.recent.earlier(cameras),
        )
        self.recent.add(evidence, burst_gap)
        self.scorer.learn(images, cameras, scored)  # the watcher's stage after the triage
        classes = self.scorer.classes
        empty_name = self.scorer.manifest.classifier.empty_classes
        for r, s, v in zip(rows, scored, verdicts, strict=True):
            truth = classes[r.y]
            said = (empty_name[0] if empty_name else "empty") if v == "empty" else s.score.label
            self.frames.append(
                {
                    "file": r.file,
                    "label": truth,
                    "csv_label": r.label,
                    "final_label": truth if v == "review" else said,
                    "reviewed": v == "review",
                    "decision": v,
                    "predicted": s.score.label,
                    "confidence": round(s.fused, 5),
                }
            )
        return verdicts, out


def _starting_policy(
    bundle: Bundle, rows: Sequence[Row], leave_stream_out: bool, *, C: float
) -> tuple[Policy, tuple[np.ndarray, np.ndarray] | None, int]:
    """The bundle's policy, its first labels, and how many of them were the stream's own
    frames (the same file, or the same source): left out, and the head refitted without
    them, when asked."""
    policy = policy_of(bundle)
    first = first_labels(bundle)
    if first is None:
        return policy, None, 0
    files = {r.file for r in rows}
    sources = {r.source for r in rows} - {""}
    mine = np.array(
        [f in files or s in sources for f, s in zip(first.files, first.sources, strict=True)], bool
    )
    if not (leave_stream_out and mine.any()):
        return policy, (first.X, first.y), 0
    first = first.keep(~mine)
    # the shipped head's own recipe (its L2 strength, when the bundle records it)
    C = float(bundle.manifest.validation.get("camtrap_loso", {}).get("C", C))
    head = fit_head(first.X, first.y, C=C, n_classes=len(bundle.manifest.classifier.classes))
    return (
        Policy(head["weight"], head["bias"], policy.fusion, policy.thresholds),
        (first.X, first.y),
        int(mine.sum()),
    )


def simulate(
    labels_csv: Path,
    images_root: Path,
    bundle_root: Path,
    *,
    target_error: float = 0.02,
    every: int = 50,
    source: str | None = None,
    batch: int = 16,
    burst_gap: float = 10.0,
    leave_stream_out: bool = True,
    limit: int | None = None,
    threads: int | None = None,
    C: float = 0.1,
    progress: Any = None,
) -> dict[str, Any]:
    """Replay the stream (see the module docstring) and return the report: the learning run's
    figures and `frames`, the baselines' figures, and every learning step's report.

    `every`: learn after this many new answers (0: never). `limit`: the first frames only.
    `progress(done, total)`: called after each batch.
    """
    started = time.monotonic()
    bundle = load_bundle(bundle_root)
    m = bundle.manifest
    c = m.classifier
    classes, empty = c.classes, empty_indices(m)
    rows, skipped = read_stream(
        labels_csv, classes, c.empty_classes, source=source, images_root=images_root
    )
    rows = rows[:limit] if limit else rows
    if not rows:
        raise ValueError(
            f"{labels_csv}: no frame with a label the bundle knows"
            + (f" in source {source!r}" if source else "")
        )
    runtime = Runtime.from_bundle(bundle, features=True, threads=threads)
    start, first, left_out = _starting_policy(bundle, rows, leave_stream_out, C=C)

    def track(name: str, policy: Policy, softmax_only: bool = False) -> _Track:
        scorer = Scorer(runtime, m, backgrounds=CameraBackgrounds(), fusion=policy.fusion)
        return _Track(name, scorer, policy, softmax_only)

    # every track starts from the starting head's outputs (`base`, weight None here)
    as_base = Policy(None, None, start.fusion, start.thresholds)
    learning = track("learning", as_base)
    shipped = track("shipped", as_base)
    fixed = track(
        "softmax_0.7",
        Policy(None, None, None, {**start.thresholds, "tag": SOFTMAX_TAG, "empty": SOFTMAX_TAG}),
        softmax_only=True,
    )
    answers = _Store()  # the reviewer's answers
    steps: list[dict[str, Any]] = []
    since = 0
    min_side = int(max(*c.input.size, *m.segmenter.input.size))
    for i in range(0, len(rows), batch):
        chunk = rows[i : i + batch]
        images = [decode_frame(images_root / r.file, min_side=min_side).image for r in chunk]
        base = runtime.run(images)
        if start.weight is not None:  # the starting head, refitted or the bundle's own
            base = _head_outputs(start, base)
        for t in (shipped, fixed):
            t.decide(chunk, images, base, burst_gap)
        verdicts, _ = learning.decide(chunk, images, base, burst_gap)
        assert base.features is not None and base.fmap is not None
        for j, v in enumerate(verdicts):
            if v == "review":  # the reviewer answers with the CSV's label
                answers.add(chunk[j].file, chunk[j].y, base, j, i + j)
                since += 1
        if every and since >= every:
            since = 0
            step_report = _learn(learning, answers, classes, empty, first, target_error, C)
            step_report["after_frames"] = i + len(chunk)
            steps.append(step_report)
        if progress is not None:
            progress(min(i + batch, len(rows)), len(rows))
    ours = figures(learning.frames, c.empty_classes)
    review_all = [
        {**f, "final_label": f["label"], "reviewed": True, "decision": "review"}
        for f in learning.frames
    ]
    return {
        **ours,
        "target_error": target_error,
        "every": every,
        "bundle": str(bundle_root),
        "labels": str(labels_csv),
        "source": source,
        "skipped_unlabelled": skipped,
        "first_labels": 0 if first is None else int(len(first[1])),
        "first_labels_left_out": left_out,
        "installs": sum(bool(s.get("install")) for s in steps),
        "final_thresholds": learning.policy.thresholds,
        "baselines": {
            "review_all": figures(review_all, c.empty_classes),
            "softmax_0.7_no_learning": figures(fixed.frames, c.empty_classes),
            "shipped_no_learning": figures(shipped.frames, c.empty_classes),
        },
        "steps": steps,
        "seconds": round(time.monotonic() - started, 1),
        "frames": learning.frames,
    }


def _head_outputs(policy: Policy, base: Outputs) -> Outputs:
    """`base` with the logits, softmax and maps of the policy's head instead."""
    assert base.features is not None and base.fmap is not None
    logits, cam = apply_head(policy.weight, policy.bias, base.features, base.fmap)
    probs = softmax(logits, axis=1).astype(np.float32)  # float32, as the Runtime gives them
    return Outputs(
        logits=logits,
        probs=probs,
        cam=cam,
        foreground=base.foreground,
        providers=base.providers,
        features=base.features,
        fmap=base.fmap,
    )


@dataclass
class _Store:
    """The reviewer's answers so far, with each frame's class, features, starting outputs and
    place in the stream."""

    keys: list[str] = field(default_factory=list)
    pos: list[int] = field(default_factory=list)
    feats: list[np.ndarray] = field(default_factory=list)
    fmaps: list[np.ndarray] = field(default_factory=list)
    fgs: list[np.ndarray] = field(default_factory=list)
    ys: list[int] = field(default_factory=list)
    probs: list[np.ndarray] = field(default_factory=list)
    cams: list[np.ndarray] = field(default_factory=list)

    def add(self, key: str, y: int, base: Outputs, j: int, pos: int) -> None:
        assert base.features is not None and base.fmap is not None
        self.keys.append(key)
        self.pos.append(pos)
        self.feats.append(base.features[j])
        self.fmaps.append(base.fmap[j].astype(np.float16))  # half the memory, maps need no more
        self.fgs.append(base.foreground[j].astype(np.float16))
        self.ys.append(y)
        self.probs.append(base.probs[j])
        self.cams.append(base.cam[j])

    def examples(self, idx: Sequence[int] | None = None) -> Examples:
        idx = range(len(self.keys)) if idx is None else idx
        return Examples(
            [self.keys[i] for i in idx],
            np.stack([self.feats[i] for i in idx]),
            np.stack([self.fmaps[i] for i in idx]),
            np.stack([self.fgs[i] for i in idx]),
            np.array([self.ys[i] for i in idx]),
        )

    def outputs_of(self, policy: Policy, idx: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """The policy's softmax and maps on these frames (the starting ones until a head is
        learned)."""
        if policy.weight is None:
            return (np.stack([self.probs[i] for i in idx]), np.stack([self.cams[i] for i in idx]))
        ex = self.examples(idx)
        logits, cam = apply_head(
            policy.weight, policy.bias, ex.features, ex.fmap.astype(np.float32)
        )
        return softmax(logits), cam


def _learn(
    track: _Track,
    answers: _Store,
    classes: Sequence[str],
    empty: list[int],
    first: tuple[np.ndarray, np.ndarray] | None,
    target_error: float,
    C: float,
) -> dict[str, Any]:
    """One learning step on the answers so far, validated on the held-back answers; the track
    takes the candidate if better."""
    ex = answers.examples()
    test = held_back(len(ex))
    probs, cam = answers.outputs_of(track.policy, test)
    step = learn_step(
        ex,
        classes=classes,
        empty_index=empty,
        current=track.policy,
        current_probs=probs,
        current_cam=cam,
        first=first,
        target_error=target_error,
        C=C,
    )
    if step.install and step.policy is not None:
        track.policy = step.policy
        track.scorer.fusion = step.policy.fusion
    return step.report


def write_report(path: Path, report: dict[str, Any]) -> Path:
    """The report as JSON (written to a temporary file, then renamed into place)."""
    import json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=1, default=jsonable) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
