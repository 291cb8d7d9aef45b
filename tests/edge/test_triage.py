"""The triage policy on hand-made evidence where the right decision is known."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from edge.triage import Evidence, bursts, decide, decide_all

T0 = datetime(2026, 5, 1, 6, 0, 0)
TH = {"tag": 0.7, "empty": 0.6, "empty_foreground": 0.02}


def ev(**kw) -> Evidence:
    base = dict(
        camera="cam1",
        time=T0,
        label="elk",
        is_empty_class=False,
        is_human=False,
        softmax=0.9,
        fused=0.9,
        foreground=0.2,
        background_ready=True,
    )
    return Evidence(**{**base, **kw})


def test_confident_animal_is_tagged_and_doubtful_one_goes_to_review() -> None:
    assert decide(ev(), TH) == "tagged"
    assert decide(ev(fused=0.5), TH) == "review"


def test_empty_needs_the_class_and_a_quiet_frame() -> None:
    empty = ev(label="empty", is_empty_class=True, softmax=0.95, fused=0.95, foreground=0.0)
    assert decide(empty, TH) == "empty"
    # called empty, but something large stands in front of the camera
    assert decide(replace(empty, foreground=0.3), TH) == "review"
    # called empty without conviction
    assert decide(replace(empty, softmax=0.4, fused=0.4), TH) == "review"


def test_a_quiet_frame_is_never_empty_without_an_empty_class() -> None:
    # a still animal the background model has absorbed, named doubtfully: a person looks
    quiet = ev(label="tench", fused=0.3, foreground=0.0)
    assert decide(quiet, TH) == "review"
    assert decide(replace(quiet, background_ready=False), TH) == "review"
    assert decide(replace(quiet, fused=0.9), TH) == "tagged"


def test_an_empty_label_without_conviction_is_reviewed_even_on_a_quiet_frame() -> None:
    empty = ev(label="empty", is_empty_class=True, foreground=0.0)
    # fused may be high (a calibrated "the label is right"), but "empty" needs its own bar
    assert decide(replace(empty, softmax=0.59, fused=0.95), TH) == "review"
    assert decide(replace(empty, softmax=0.6, fused=0.95), TH) == "empty"


def test_thresholds_are_honoured() -> None:
    assert decide(ev(fused=0.75), {**TH, "tag": 0.8}) == "review"
    assert decide(ev(fused=0.75), {**TH, "tag": 0.7}) == "tagged"


def test_bursts_split_by_camera_and_gap() -> None:
    frames = [
        ev(time=T0),
        ev(time=T0 + timedelta(seconds=2)),
        ev(time=T0 + timedelta(seconds=60)),
        ev(camera="cam2", time=T0 + timedelta(seconds=1)),
        ev(time=None),
    ]
    ids = bursts(frames, gap_seconds=10)
    assert ids[0] == ids[1]
    assert len({ids[0], ids[2], ids[3], ids[4]}) == 4


def test_a_burst_with_an_animal_is_not_empty() -> None:
    empty = dict(label="empty", is_empty_class=True, softmax=0.95, fused=0.95, foreground=0.0)
    frames = [
        ev(time=T0, **empty),
        ev(time=T0 + timedelta(seconds=1)),  # the elk
        ev(time=T0 + timedelta(seconds=2), **empty),
        ev(time=T0 + timedelta(minutes=5), **empty),  # a later, separate burst
    ]
    assert decide_all(frames, TH, burst_gap_seconds=10) == ["review", "tagged", "review", "empty"]


EMPTY = dict(label="empty", is_empty_class=True, softmax=0.95, fused=0.95, foreground=0.0)


def test_a_burst_ends_after_its_most_frames_so_copies_do_not_chain_into_one() -> None:
    """Thirty frames a second apart (file times of a bulk copy) and one elk among them: only
    the elk's burst of ten is kept for review, not the whole card."""
    frames = [ev(time=T0 + timedelta(seconds=s), **EMPTY) for s in range(30)]
    frames[12] = ev(time=T0 + timedelta(seconds=12))  # the elk
    ids = bursts(frames, gap_seconds=10, max_frames=10)
    assert ids == [0] * 10 + [1] * 10 + [2] * 10
    out = decide_all(frames, TH, burst_gap_seconds=10, burst_frames=10)
    assert out[12] == "tagged"
    assert [i for i, d in enumerate(out) if d == "review"] == [*range(10, 12), *range(13, 20)]
    assert out.count("empty") == 20


def test_a_burst_split_across_batches_is_still_one() -> None:
    """The elk was in the previous batch: the empty frame two seconds later is its burst; one
    five minutes later is not, and neither is one after a full burst."""
    earlier = [ev(time=T0)]  # the elk
    now = [ev(time=T0 + timedelta(seconds=2), **EMPTY), ev(time=T0 + timedelta(minutes=5), **EMPTY)]
    assert decide_all(now, TH, burst_gap_seconds=10, earlier=earlier) == ["review", "empty"]
    # the elk's burst already holds its most frames: the next frame starts another
    full = earlier + [ev(time=T0 + timedelta(seconds=s), **EMPTY) for s in range(1, 10)]
    later = [ev(time=T0 + timedelta(seconds=10), **EMPTY)]
    assert decide_all(later, TH, burst_gap_seconds=10, burst_frames=10, earlier=full) == ["empty"]
    assert decide_all(later, TH, burst_gap_seconds=10, burst_frames=11, earlier=full) == ["review"]
