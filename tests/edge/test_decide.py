"""edge.decide: the triage stage as a pure function, on frames scored by a real bundle, and
`Bursts`, the memory that keeps a burst split across batches one burst."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from edge.bundle import load_bundle
from edge.decide import Bursts, decide_batch, evidence_of
from edge.journal import Verdict
from edge.loader import infer, min_side, read
from edge.runtime import Runtime
from edge.scorer import Scorer
from edge.triage import Evidence, bursts, decide_all

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
PERU = DATA / "camtrap" / "peru_s90_animl" / "S90_SDZG1"
ALL_REVIEW = {"tag": 1.0, "empty": 1.0}  # nothing is sure enough: every frame to a person


@pytest.fixture(scope="module")
def batch(tiny_bundle: Path):
    """Four real frames of one camera, read, inferred and scored by the tiny bundle."""
    paths = sorted(PERU.glob("*.JPG"))[:4]
    if len(paths) < 4:
        pytest.skip(f"reference data missing: {PERU}")
    bundle = load_bundle(tiny_bundle)
    rt = Runtime.from_bundle(bundle, threads=1)
    loaded = infer(*read(paths, rt, min_side(rt)), rt)
    cameras = ["S90"] * len(loaded.images)
    scored = Scorer(rt, bundle.manifest).score(loaded.images, cameras, outputs=loaded.outputs)
    return bundle, cameras, loaded.taken, scored


def _snapshot(scored):
    return [
        (copy.deepcopy(s.score.__dict__), s.fused, s.entropy, s.probs.copy(), s.cam.copy())
        for s in scored
    ]


def _same_snapshot(a, b) -> bool:
    for (d1, f1, e1, p1, c1), (d2, f2, e2, p2, c2) in zip(a, b, strict=True):
        if (f1, e1) != (f2, e2) or not np.array_equal(p1, p2) or not np.array_equal(c1, c2):
            return False
        for k in d1:
            v1, v2 = d1[k], d2[k]
            if isinstance(v1, np.ndarray) or isinstance(v2, np.ndarray):
                if not np.array_equal(v1, v2):
                    return False
            elif v1 != v2:
                return False
    return True


def test_decide_batch_is_pure(batch):
    bundle, cameras, taken, scored = batch
    spec = bundle.manifest.classifier.input
    earlier = [evidence_of("S90", taken[0].time, scored[0])]
    cams0, taken0, earlier0, snap0 = list(cameras), list(taken), list(earlier), _snapshot(scored)
    first = decide_batch(cameras, taken, scored, ALL_REVIEW, earlier=earlier, overlay_spec=spec)
    second = decide_batch(cameras, taken, scored, ALL_REVIEW, earlier=earlier, overlay_spec=spec)
    assert first == second
    assert len(first[0]) == len(first[1]) == 4
    assert cameras == cams0 and taken == taken0 and earlier == earlier0
    assert _same_snapshot(snap0, _snapshot(scored))


def test_overlay_data_only_for_review_and_only_with_a_spec(batch):
    bundle, cameras, taken, scored = batch
    spec = bundle.manifest.classifier.input
    with_spec, _ = decide_batch(cameras, taken, scored, ALL_REVIEW, overlay_spec=spec)
    without, _ = decide_batch(cameras, taken, scored, ALL_REVIEW)
    assert [d.decision for d in with_spec] == [Verdict.REVIEW] * 4
    assert all(isinstance(d.overlay_data, bytes) and d.overlay_data for d in with_spec)
    assert all(d.overlay_data is None for d in without)
    # a frame not sent to review keeps no overlay even with a spec (bursts of one frame, so
    # no empty is lifted to review by a burst-mate)
    sure, _ = decide_batch(
        cameras,
        taken,
        scored,
        {"tag": 0.0, "empty": 0.0, "empty_foreground": 1.0},
        burst_frames=1,
        overlay_spec=spec,
    )
    assert all(d.decision != Verdict.REVIEW for d in sure)
    assert all(d.overlay_data is None for d in sure)


def test_journal_columns_come_from_taken_and_scored(batch):
    _, cameras, taken, scored = batch
    decisions, evidence = decide_batch(cameras, taken, scored, ALL_REVIEW)
    for d, t, s, e in zip(decisions, taken, scored, evidence, strict=True):
        assert d.captured_at == t.time is not None
        assert d.time_source == t.time_source
        assert (d.width, d.height) == (t.width, t.height) == (768, 576)
        assert d.label == s.score.label and d.class_index == s.score.class_index
        assert d.softmax == s.score.softmax and d.overmap == s.score.overmap
        assert d.confidence == s.fused and d.entropy == s.entropy
        assert d.mask_source == s.score.mask_source == "segmenter"
        assert d.top_k == tuple((n, float(p)) for n, p in s.score.top_k) and d.top_k
        assert d.species_guess is None and d.species_guess_p is None  # no guess head
        assert e.time == t.time and e.camera == "S90" and e.fused == s.fused


def test_species_guess_comes_from_scored_guess(batch):
    _, cameras, taken, scored = batch
    guessed = [copy.copy(s) for s in scored]
    for s in guessed:
        s.guess = ("Mazama americana", 0.123456)
    decisions, _ = decide_batch(cameras, taken, guessed, ALL_REVIEW)
    assert all(d.species_guess == "Mazama americana" for d in decisions)
    assert all(d.species_guess_p == 0.1235 for d in decisions)


@pytest.mark.parametrize("cut", ["cameras", "taken", "scored"])
def test_mismatched_lengths_are_refused(batch, cut):
    _, cameras, taken, scored = batch
    args = {"cameras": cameras, "taken": taken, "scored": scored}
    args[cut] = args[cut][:-1]
    with pytest.raises(ValueError):
        decide_batch(args["cameras"], args["taken"], args["scored"], ALL_REVIEW)


# -- Bursts, on Evidence made directly

T0 = datetime(2024, 5, 1, 6, 0, 0)


def ev(i: int, camera: str = "c", *, empty: bool = True) -> Evidence:
    """Frame i of a camera, i seconds after T0: a sure empty, or a sure animal."""
    return Evidence(
        camera=camera,
        time=T0 + timedelta(seconds=i),
        label="empty" if empty else "deer",
        is_empty_class=empty,
        is_human=False,
        softmax=0.99,
        fused=0.99,
        foreground=0.0,
        background_ready=False,
    )


def batched_partition(frames: list[Evidence], size: int, gap: float, cap: int) -> list[int]:
    """The bursts the loop sees, batch by batch with a Bursts memory, as global labels."""
    memory = Bursts(max_frames=cap)
    label_of: dict[int, int] = {}  # id(Evidence) -> global burst label
    labels: list[int] = []
    fresh = 0
    for k in range(0, len(frames), size):
        part = frames[k : k + size]
        earlier = memory.earlier(e.camera for e in part)
        ids = bursts([*earlier, *part], gap, cap)
        local = {ids[j]: label_of[id(e)] for j, e in enumerate(earlier)}
        for j, e in enumerate(part):
            b = ids[len(earlier) + j]
            if b not in local:
                local[b], fresh = fresh + 1000, fresh + 1
            label_of[id(e)] = local[b]
            labels.append(local[b])
        memory.add(part, gap)
    return labels


def groups(labels: list[int]) -> list[list[int]]:
    out: dict[int, list[int]] = {}
    for i, b in enumerate(labels):
        out.setdefault(b, []).append(i + 1)
    return sorted(out.values())


def test_a_burst_split_across_two_batches_is_one_burst():
    frames = [ev(i) for i in range(1, 5)]  # 4 frames 1 s apart, cap 10: one burst
    assert groups(batched_partition(frames, 2, 10.0, 10)) == [[1, 2, 3, 4]]
    # an animal at the end of the first batch sends the second batch's empties to review
    memory = Bursts(max_frames=10)
    memory.add([ev(1), ev(2, empty=False)], 10.0)
    t = {"tag": 0.5, "empty": 0.5}
    second = [ev(3), ev(4)]
    assert decide_all(second, t, burst_gap_seconds=10.0) == [Verdict.EMPTY] * 2  # alone
    v = decide_all(second, t, burst_gap_seconds=10.0, earlier=memory.earlier(["c"]))
    assert v == [Verdict.REVIEW, Verdict.REVIEW]


def test_the_frame_cap_counts_from_where_the_burst_really_began():
    frames = [ev(i) for i in range(1, 7)]  # 1 s apart, cap 3
    assert groups([b for b in bursts(frames, 10.0, 3)]) == [[1, 2, 3], [4, 5, 6]]
    assert groups(batched_partition(frames, 2, 10.0, 3)) == [[1, 2, 3], [4, 5, 6]]


def test_an_animal_opening_a_burst_lifts_its_empties_in_the_next_batch():
    frames = [ev(1), ev(2), ev(3), ev(4, empty=False), ev(5), ev(6)]
    t = {"tag": 0.5, "empty": 0.5}
    whole = decide_all(frames, t, burst_gap_seconds=10.0, burst_frames=3)
    assert whole == [Verdict.EMPTY] * 3 + [Verdict.TAGGED, Verdict.REVIEW, Verdict.REVIEW]
    memory, got = Bursts(max_frames=3), []
    for k in range(0, 6, 2):
        part = frames[k : k + 2]
        got += decide_all(
            part, t, burst_gap_seconds=10.0, burst_frames=3, earlier=memory.earlier(["c"])
        )
        memory.add(part, 10.0)
    assert got == whole


def test_bursts_keeps_cameras_apart_and_forgets_closed_bursts():
    memory = Bursts(max_frames=10)
    memory.add([ev(1, "a"), ev(2, "b"), ev(100, "a")], 10.0)
    # camera a's burst at 1 s closed when the 100 s frame came: only that one is kept
    assert [e.time for e in memory.earlier(["a"])] == [T0 + timedelta(seconds=100)]
    assert [e.camera for e in memory.earlier(["b", "a", "b"])] == ["b", "a"]
    assert memory.earlier(["z"]) == []
    untimed = Evidence("u", None, "empty", True, False, 0.9, 0.9, 0.0, False)
    memory.add([untimed], 10.0)
    assert memory.earlier(["u"]) == []
