"""edge.mask_sources and the scorer's two stages: `choose` picks the mask, `Scorer.score`
changes nothing, `Scorer.learn` is where the background models learn. Real bundle, real frames."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from edge.background import CameraBackgrounds
from edge.bundle import load_bundle
from edge.decode import load_image
from edge.mask_sources import BackgroundMasks, GivenMasks, SegmenterMasks, choose
from edge.runtime import Runtime
from edge.scorer import Scorer

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
CA01 = DATA / "camtrap" / "mlwic_examples" / "CA-01"


@pytest.fixture(scope="module")
def setup(tiny_bundle: Path):
    paths = sorted(CA01.iterdir())[:14]
    if len(paths) < 14:
        pytest.skip(f"reference data missing: {CA01}")
    bundle = load_bundle(tiny_bundle)
    rt = Runtime.from_bundle(bundle, threads=1)
    images = [load_image(p) for p in paths]
    return bundle, rt, images


def mask(v: float) -> np.ndarray:
    return np.full((16, 16), v, np.float32)


def test_choose_file_beats_all():
    m, src = choose({"file": mask(0.3), "segmenter": mask(0.9), "background": mask(0.8)})
    assert src == "file" and np.array_equal(m, mask(0.3))


def test_choose_segmenter_and_background_combine():
    m, src = choose({"segmenter": mask(0.81), "background": mask(0.25), "file": None})
    assert src == "combined"
    assert np.allclose(m, np.sqrt(0.81 * 0.25))  # the geometric mean, not either one


@pytest.mark.parametrize("name", ["segmenter", "background"])
def test_choose_one_alone_is_named(name):
    other = {"segmenter": "background", "background": "segmenter"}[name]
    m, src = choose({name: mask(0.4), other: None})
    assert src == name and np.allclose(m, 0.4)
    m, src = choose({name: mask(0.4)})
    assert src == name


def test_choose_none():
    assert choose({}) == (None, None)
    assert choose({"file": None, "segmenter": None, "background": None}) == (None, None)


def _state(bg: CameraBackgrounds):
    """Everything a CameraBackgrounds shows of itself: frames per camera and mode, bytes,
    cameras held, and their least-recently-used order (which one a full budget drops)."""
    return copy.deepcopy(bg.state()), bg.nbytes, len(bg), list(bg.models())


def _same(a, b) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.score.label == y.score.label and x.score.mask_source == y.score.mask_source
        assert x.score.overmap == y.score.overmap and x.fused == y.fused
        assert x.score.foreground_fraction == y.score.foreground_fraction
        assert x.background_ready == y.background_ready
        assert np.array_equal(x.probs, y.probs) and np.array_equal(x.cam, y.cam)
        assert np.array_equal(x.score.mask, y.score.mask)


def _learnt(bundle, rt, images) -> tuple[CameraBackgrounds, Scorer]:
    """Backgrounds that learnt camera "ca01" (ready) and then camera "other" (not ready)."""
    bg = CameraBackgrounds(min_frames=3, max_frames=20)
    scorer = Scorer(rt, bundle.manifest, backgrounds=bg)
    scorer.learn(images[:6], ["ca01"] * 6, scorer.score(images[:6], ["ca01"] * 6))
    scorer.learn(images[6:7], ["other"], scorer.score(images[6:7], ["other"]))
    return bg, scorer


def test_score_twice_is_identical_and_learns_nothing(setup):
    bundle, rt, images = setup
    bg, scorer = _learnt(bundle, rt, images)
    counts, nbytes = copy.deepcopy(bg.state()), bg.nbytes
    assert bg.model("ca01").ready(images[8])
    cams = ["ca01", "ca01", "other", "ca01"]
    first = scorer.score(images[8:12], cams)
    assert bg.state() == counts and bg.nbytes == nbytes
    second = scorer.score(images[8:12], cams)
    assert bg.state() == counts and bg.nbytes == nbytes
    _same(first, second)
    assert [s.background_ready for s in first] == [True, True, False, True]
    assert [s.score.mask_source for s in first] == ["combined", "combined", "segmenter", "combined"]


def test_score_changes_no_state_at_all(setup):
    bundle, rt, images = setup
    bg, scorer = _learnt(bundle, rt, images)
    before = _state(bg)
    assert before[3] == ["ca01", "other"]
    scorer.score(images[8:10], ["ca01", "never-learnt"])
    assert _state(bg) == before


def test_learn_changes_the_background(setup):
    bundle, rt, images = setup
    bg = CameraBackgrounds(min_frames=3, max_frames=20)
    scorer = Scorer(rt, bundle.manifest, backgrounds=bg)
    cams = ["ca01"] * 10
    scored = scorer.score(images[:10], cams)
    assert all(not s.background_ready for s in scored)
    assert sum(bg.state().get("ca01", {}).values()) == 0
    scorer.learn(images[:10], cams, scored)
    learnt = sum(bg.state()["ca01"].values())
    # the tiny random model is no animal detector: frames it calls a sure animal stay out
    animals = sum(not s.is_empty_class and s.score.softmax >= 0.5 for s in scored)
    assert learnt == 10 - animals > 0
    assert bg.nbytes > 0


def test_learn_without_backgrounds_does_nothing(setup):
    bundle, rt, images = setup
    scorer = Scorer(rt, bundle.manifest)
    scored = scorer.score(images[:2], ["a", "a"])
    scorer.learn(images[:2], ["a", "a"], scored)  # no models: nothing to learn, no error
    assert [type(s) for s in scorer.sources] == [SegmenterMasks]


def test_a_given_mask_is_scored_as_file(setup):
    bundle, rt, images = setup
    bg = CameraBackgrounds(min_frames=3, max_frames=20)
    scorer = Scorer(rt, bundle.manifest, backgrounds=bg)
    h, w = images[0].shape[:2]
    full = np.zeros((h, w), np.float32)
    full[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 1.0
    scored = scorer.score(images[:2], ["a", "a"], masks=[full, None])
    assert scored[0].score.mask_source == "file"
    assert scored[1].score.mask_source == "segmenter"
    assert 0.1 < scored[0].score.foreground_fraction < 0.5
    # the given source is for that call only
    assert [s.name for s in scorer.sources] == ["segmenter", "background"]
    spec = bundle.manifest.classifier.input
    got = GivenMasks([full, None], spec).masks(images[:2], ["a", "a"], None)  # type: ignore[arg-type]
    assert got[1] is None and got[0].shape == tuple(spec.size)


def test_background_masks_answer_none_until_ready(setup):
    bundle, _, images = setup
    bg = CameraBackgrounds(min_frames=3, max_frames=20)
    src = BackgroundMasks(bg, bundle.manifest.classifier.input)
    assert src.masks(images[:1], ["x"], None) == [None]  # type: ignore[arg-type]
    src.learn(images[:5], ["x"] * 5, [False] * 5)
    assert bg.state()["x"]["colour"] + bg.state()["x"]["ir"] == 5
    m = src.masks(images[5:6], ["x"], None)[0]  # type: ignore[arg-type]
    assert m is not None and m.shape == tuple(bundle.manifest.classifier.input.size)
    src.learn(images[5:6], ["x"], [True])  # an animal frame stays out of the scene's memory
    assert bg.state()["x"]["colour"] + bg.state()["x"]["ir"] == 5
