"""What a ranger reads after the fact, straight from the journal: summaries per camera, day and
species, and the files other tools open (MegaDetector results, Camtrap DP)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console, Group
from rich.table import Table

from edge.bundle import Manifest
from edge.journal import Answer, Frame, Journal, Verdict
from edge.results import BundleInfo, FrameRecord, write_md_results

DECISIONS = (Verdict.TAGGED, Verdict.REVIEW, Verdict.EMPTY, Verdict.QUARANTINE)  # table order
MD_RESULTS = "results/megadetector.json"


def record_of(frame: Frame, answer: Answer | None = None) -> FrameRecord:
    """A journal row as the results writers want it; with a person's `answer` (edge review)
    the label and decision are theirs, classified by a human."""
    record = FrameRecord(
        relpath=frame.relpath,
        camera=frame.camera,
        sha256=frame.sha256,
        timestamp=frame.captured_at,
        time_source=frame.time_source,
        width=frame.width,
        height=frame.height,
        label=frame.label,
        class_index=frame.class_index,
        softmax=frame.softmax,
        overmap=frame.overmap,
        confidence=frame.confidence,
        decision=frame.decision,
        failure=frame.reason if frame.decision == "quarantine" else None,
        dest=frame.dest,
    )
    if answer is None:
        return record
    return replace(
        record,
        label=answer.label,
        decision=answer.decision,
        classification_method="human",
        classified_by=answer.who,
        classified_at=datetime.fromtimestamp(answer.answered_at, UTC),
        machine_label=answer.previous_label,
    )


def records(journal: Journal, *, deleted: bool = True) -> list[FrameRecord]:
    """Every decided or finished frame, in the order they were seen, with the answers given
    in `edge review`; `deleted=False` leaves out the empties deleted past their retention."""
    answers = {a.frame_id: a for a in journal.answers()}
    return [
        record_of(f, answers.get(f.id))
        for f in journal.frames()
        if f.decision is not None and (deleted or f.state != "deleted")
    ]


def write_results(
    journal: Journal, out: Path, manifest: Manifest, thresholds: Mapping[str, float] | None = None
) -> Path:
    """OUT/results/megadetector.json, file names relative to OUT (the sorted frames); empties
    deleted past their retention are left out, since their files are gone.

    `thresholds`: the ones the triage used (bundle < config < flags), else the bundle's."""
    return write_md_results(
        out / MD_RESULTS,
        records(journal, deleted=False),
        bundle=BundleInfo.from_manifest(manifest),
        thresholds=manifest.thresholds if thresholds is None else thresholds,
        paths="dest",
    )


def _day(frame: Frame) -> str:
    if frame.captured_at:
        return frame.captured_at.strftime("%Y-%m-%d")
    return datetime.fromtimestamp(frame.seen_at).strftime("%Y-%m-%d")


def summary(journal: Journal) -> Group:
    """Tables: decisions per camera, per day, and the species seen (tagged + review); a
    frame answered in `edge review` counts under the person's label."""
    frames = journal.frames()
    answered = {a.frame_id: a.label for a in journal.answers()}
    per_cam: dict[str, Counter[str]] = {}
    per_day: dict[str, Counter[str]] = {}
    species: Counter[str] = Counter()
    review: Counter[str] = Counter()
    for f in frames:
        d = f.decision or f.state
        per_cam.setdefault(f.camera or "(top)", Counter())[d] += 1
        per_day.setdefault(_day(f), Counter())[d] += 1
        label = answered.get(f.id, f.label)
        guess = f.species_guess
        if f.id not in answered and label == "animal" and guess:
            label = f"animal (guess: {guess})"  # the finer name, never taken as the label
        if f.decision in ("tagged", "review") and label:
            species[label] += 1
            review[label] += f.decision == "review"

    def crosstab(title: str, key: str, rows: dict[str, Counter[str]]) -> Table:
        t = Table(title=title)
        t.add_column(key)
        for d in DECISIONS:
            t.add_column(d, justify="right")
        t.add_column("total", justify="right")
        for name in sorted(rows):
            c = rows[name]
            t.add_row(name, *(str(c[d]) for d in DECISIONS), str(sum(c.values())))
        return t

    sp = Table(title="species (tagged + review)")
    sp.add_column("label")
    sp.add_column("frames", justify="right")
    sp.add_column("of which review", justify="right")
    for name, n in species.most_common():
        sp.add_row(name, str(n), str(review[name]))
    return Group(
        f"[bold]{len(frames)}[/] frames in the journal"
        + (f", {len(answered)} answered by a person (edge review)" if answered else ""),
        crosstab("per camera", "camera", per_cam),
        crosstab("per day", "day", per_day),
        sp,
    )


def print_summary(journal: Journal, console: Console) -> None:
    console.print(summary(journal))
