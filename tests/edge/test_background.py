"""The per-camera background model on real consecutive camera-trap frames."""

from __future__ import annotations

import csv
import gc
import logging
import weakref
from collections import deque
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.background import (
    BackgroundModel,
    CameraBackgrounds,
    camera_key,
    combine_masks,
    image_mode,
    pick_mask,
)
from edge.decode import load_image
from edge.masks import boxes_from_labels_bbox, mask_from_boxes

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"

CAMTRAP = SHARED / "camtrap"
needs_data = pytest.mark.skipif(not CAMTRAP.is_dir(), reason="reference data not present")


def frames(source: str, camera: str | None = None) -> list[dict[str, str]]:
    with open(CAMTRAP / "labels.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["source"] == source]
    if camera is not None:
        rows = [r for r in rows if r["camera_or_sequence"] == camera]
    return sorted(rows, key=lambda r: int(r["frame_index"]))


def image(row: dict[str, str]) -> np.ndarray:
    return load_image(CAMTRAP / row["file"])


# ----------------------------------------------------------------------------- real frames


@needs_data
def test_empty_frames_have_less_foreground_than_animal_frames() -> None:
    """Online on MLWIC CA-01: warm up on 40 frames, then score each frame before learning it.

    On frames 40..299 we measured a mean foreground fraction of 0.015 on the 98 empty frames
    and 0.051 on the 162 animal frames; P(animal frame > empty frame) = 0.77. Asserted with
    slack.
    """
    rows = frames("mlwic_examples")[:300]
    bg = BackgroundModel()
    empty, animal = [], []
    for i, r in enumerate(rows):
        im = image(r)
        if i >= 40:
            fg = bg.foreground(im)
            assert fg is not None and fg.shape == (128, 128) and fg.dtype == np.float32
            assert 0.0 <= fg.min() and fg.max() <= 1.0
            (empty if r["label"] == "empty" else animal).append(float(fg.mean()))
        bg.update(im)
    assert len(empty) > 30 and len(animal) > 100
    assert np.mean(animal) > 2 * np.mean(empty)
    a, e = np.array(animal)[:, None], np.array(empty)[None, :]
    auroc = float((a > e).mean() + 0.5 * (a == e).mean())  # Mann-Whitney
    assert auroc > 0.68


@needs_data
def test_foreground_falls_inside_megadetector_boxes() -> None:
    """Peru camera S90_SDZG2 (60 frames, bursts of 3, day and IR): foreground is denser in the
    animal's MegaDetector box than outside it, averaged over the frames where the model is ready.

    Measured: 0.27 inside vs 0.078 outside. (On S90_SDZG1, 0.13 vs 0.07 only: with a few frames
    per mode, sun and shadow changes between triggers are as large as the animal.)
    """
    rows = frames("peru_s90_animl", "S90_SDZG2")
    bg = BackgroundModel(min_frames=5)
    inside, outside = [], []
    for r in rows:
        im = image(r)
        fg = bg.foreground(im)
        if fg is not None and r["bbox"]:
            box = mask_from_boxes(boxes_from_labels_bbox(r["bbox"]), fg.shape)
            inside.append(float((fg * box).sum() / box.sum()))
            outside.append(float((fg * (1 - box)).sum() / (1 - box).sum()))
        bg.update(im)
    assert len(inside) >= 10
    assert np.mean(inside) > 2 * np.mean(outside)


@needs_data
def test_day_colour_and_night_ir_use_separate_models() -> None:
    rows = frames("peru_s90_animl", "S90_SDZG1")
    day = [r for r in rows if r["day_or_night"] == "day"]
    night = [r for r in rows if r["day_or_night"] == "night"]
    assert all(image_mode(image(r)) == "ir" for r in night)
    day_ims = [image(r) for r in day]
    assert sum(image_mode(im) == "colour" for im in day_ims) == len(day_ims)
    bg = BackgroundModel(min_frames=10)
    for im in day_ims[:12]:
        bg.update(im)
    assert bg.state() == {"colour": 12, "ir": 0}
    night_im = image(night[0])
    assert bg.ready(day_ims[12]) and not bg.ready(night_im) and not bg.ready("ir")
    assert bg.foreground(day_ims[12]) is not None
    assert bg.foreground(night_im) is None  # day frames never explain a night frame
    bg.update(night_im)
    assert bg.state() == {"colour": 12, "ir": 1}


@needs_data
def test_not_ready_before_min_frames_and_animal_frames_kept_out() -> None:
    rows = frames("mlwic_examples")[:12]
    ims = [image(r) for r in rows]
    bg = BackgroundModel(min_frames=10)
    for im in ims[:9]:
        assert bg.foreground(im) is None
        assert bg.update(im)
    assert not bg.update(ims[9], has_animal=True)  # a flagged animal frame is not learnt
    assert bg.state()["colour"] == 9 and bg.foreground(ims[9]) is None
    bg.update(ims[9])
    assert bg.foreground(ims[10]) is not None
    assert bg.foreground(ims[10], shape=(256, 200)).shape == (256, 200)


@needs_data
def test_camera_backgrounds_keyed_by_folder() -> None:
    a = frames("peru_s90_animl", "S90_SDZG1")[:3]
    b = frames("peru_s90_animl", "S90_SDZG2")[:2]
    cams = CameraBackgrounds(min_frames=2)
    for r in a + b:
        cams.update(camera_key(CAMTRAP / r["file"]), image(r))
    key_a = camera_key(CAMTRAP / a[0]["file"])
    assert key_a.endswith("S90_SDZG1") and len(cams) == 2 and key_a in cams
    assert sum(cams.state()[key_a].values()) == 3
    assert cams.foreground(key_a, image(a[0])) is not None  # three day frames: ready
    key_b = camera_key(CAMTRAP / b[0]["file"])
    assert cams.state()[key_b] == {"colour": 2, "ir": 0}
    with pytest.raises(ValueError):
        CameraBackgrounds(neighbours=0)


def reference_foregrounds(
    images: list[np.ndarray],
    *,
    size: tuple[int, int],
    neighbours: int,
    max_frames: int,
    min_frames: int = 10,
) -> list[np.ndarray | None]:
    """The module docstring's maths written plainly over [K,S,S,3] float32 frames with
    np.median, a memory per mode, default thresholds: each frame scored against the frames
    before it, then learnt. (edge/background.py before it kept its frames as uint8 computed
    the same values to the last bit: bench/bench_background.py's "plain" copy.)
    """
    past: dict[str, deque[tuple[np.ndarray, np.ndarray]]] = {
        "colour": deque(maxlen=max_frames),
        "ir": deque(maxlen=max_frames),
    }
    out: list[np.ndarray | None] = []
    for im in images:
        mem = past[image_mode(im)]
        small = cv2.resize(im, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        F = cv2.GaussianBlur(small.astype(np.float32), (3, 3), 0)
        thumb = cv2.resize(small, (16, 16), interpolation=cv2.INTER_AREA).astype(np.int64)
        if len(mem) < min_frames:
            out.append(None)
        else:
            dist = np.array([((t - thumb) ** 2).sum() for _, t in mem])
            order = [int(i) for i in np.argsort(dist, kind="stable") if dist[i] > 0]
            idx = order[:neighbours] or [int(np.argmin(dist))]
            Fk = np.stack([mem[i][0] for i in idx])  # [K,S,S,3]
            ratio = (F[::4, ::4] + 1) / (Fk[:, ::4, ::4] + 1)  # gain: every 4th pixel
            g = np.median(ratio.reshape(len(idx), -1, 3), axis=1)  # [K,3]
            G = Fk * g[:, None, None, :]
            B = np.median(G, axis=0)
            sigma = 1.4826 * np.median(np.abs(G - B), axis=0).max(axis=-1)
            z = np.abs(F - B).max(axis=-1) / np.maximum(sigma, 6.0)
            fg = np.clip((z - 3.0) / (6.0 - 3.0), 0, 1).astype(np.float32)
            out.append(cv2.morphologyEx(fg, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)))
        mem.append((F, thumb))
    return out


@needs_data
@pytest.mark.parametrize(
    ("size", "neighbours"), [((128, 128), 5), ((40, 52), 4), ((49, 49), 1), ((32, 32), 16)]
)
def test_foreground_is_the_plain_per_pixel_computation(
    size: tuple[int, int], neighbours: int
) -> None:
    """The model's fast path (uint8 planes blurred again when chosen, min/max median network,
    descriptor ring) against the formulas computed plainly, on 30 MLWIC frames then 6 of them
    again (a frame already in memory is not its own neighbour), with a memory of 24 so that
    the ring wraps: equal to the last bit.
    """
    rows = frames("mlwic_examples")[:30]
    ims = [image(r) for r in rows]
    ims += ims[3:9]
    bg = BackgroundModel(size=size, neighbours=neighbours, max_frames=24)
    fast = []
    for im in ims:
        fast.append(bg.foreground(im))
        bg.update(im)
    ref = reference_foregrounds(ims, size=size, neighbours=neighbours, max_frames=24)
    assert [f is None for f in fast] == [r is None for r in ref] == [True] * 10 + [False] * 26
    for f, r in zip(fast[10:], ref[10:], strict=True):
        assert f is not None and r is not None and f.shape == size
        np.testing.assert_array_equal(f, r)
    assert max(float(f.max()) for f in fast[10:] if f is not None) == 1.0  # not all blank


@needs_data
def test_foreground_is_bit_identical_by_day_and_night_and_past_a_full_memory() -> None:
    """Default options on 260 MLWIC frames (the 200-frame memory fills, then wraps), and the
    two Peru cameras' day colour and night infrared frames (576x768) with min_frames 3 and a
    memory of 20: the model's foregrounds against the plain maths, max difference 0."""
    ims = [image(r) for r in frames("mlwic_examples")[:260]]
    bg = BackgroundModel()
    fast = []
    for im in ims:
        fast.append(bg.foreground(im))
        bg.update(im)
    assert bg.state() == {"colour": 200, "ir": 0}
    ref = reference_foregrounds(ims, size=(128, 128), neighbours=5, max_frames=200)
    for camera in ("S90_SDZG1", "S90_SDZG2"):
        peru = [image(r) for r in frames("peru_s90_animl", camera)]
        bg = BackgroundModel(min_frames=3, max_frames=20)
        for im in peru:
            fast.append(bg.foreground(im))
            bg.update(im)
        assert min(bg.state().values()) == 20  # both modes full, and wrapped
        ref += reference_foregrounds(
            peru, size=(128, 128), neighbours=5, max_frames=20, min_frames=3
        )
    assert [f is None for f in fast] == [r is None for r in ref]
    compared = [(f, r) for f, r in zip(fast, ref, strict=True) if r is not None]
    assert len(compared) == 250 + (33 - 3) + (27 - 3) + (24 - 3) + (27 - 3)  # day, night
    assert max(float(np.abs(f - r).max()) for f, r in compared) == 0.0


@needs_data
def test_memory_is_compact_and_frames_are_not_kept_alive() -> None:
    """A frame at the 128x128 working size costs 53 KB (uint8 planes and a float32
    thumbnail), against 220 KB as float32; the model's byte count grows with the frames
    learnt, up to max_nbytes; the full-size frame asked last is not held by the model."""
    ims = [image(r) for r in frames("mlwic_examples")[:230]]
    bg = BackgroundModel()
    assert bg.nbytes == 0 and 21e6 < bg.max_nbytes < 22e6
    for im in ims[:20]:
        bg.update(im)
    assert 20 * 53_000 <= bg.nbytes <= 32 * 53_000  # room made ahead for a few more
    for im in ims[20:]:
        bg.update(im)
    assert bg.state()["colour"] == 200 and bg.nbytes == bg.max_nbytes // 2
    frame = image(frames("mlwic_examples")[250])
    alive = weakref.ref(frame)
    assert bg.foreground(frame) is not None
    del frame
    gc.collect()
    assert alive() is None


@needs_data
def test_camera_backgrounds_stay_within_their_budget(caplog: pytest.LogCaptureFixture) -> None:
    """20 cameras' worth of real frames (MLWIC colour, Peru day and night), 30 frames each,
    turn by turn, through models of the default size in a budget of one full model (21 MB):
    after every frame the models' own byte count is within the budget and the camera just
    used keeps its model; each drop is logged once."""
    mlwic = [image(r) for r in frames("mlwic_examples")[:400]]
    peru = [image(r) for r in frames("peru_s90_animl", "S90_SDZG1")]
    budget = BackgroundModel().max_nbytes
    cams = CameraBackgrounds(max_bytes=budget)
    most = 0
    with caplog.at_level(logging.INFO, logger="edge.background"):
        for i in range(30):
            for c in range(20):
                im = peru[(c + i) % len(peru)] if c % 4 == 0 else mlwic[(20 * i + c) % 400]
                camera = f"cam{c:02d}"
                cams.foreground(camera, im)
                cams.update(camera, im)
                models = cams.models()
                assert list(models)[-1] == camera  # the most recent, kept
                assert cams.nbytes == sum(m.nbytes for m in models.values()) <= budget
                most = max(most, cams.nbytes)
    assert most > 0.9 * budget  # it did fill up (30 frames x 20 cameras: 32 MB)
    drops = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert cams.evictions == len(drops) > 0 and len(cams) < 20
    assert all(r.levelno == logging.INFO for r in drops)


@needs_data
def test_the_least_recently_used_camera_is_dropped_and_starts_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Three cameras fill their (small) memories on real frames within a budget for three
    and a half; camera A learns one frame more, then a fourth camera's frames come: B, the
    least recently used, is dropped (one info line), A and C are kept, and B learns again
    from scratch: not ready until it has min_frames frames again."""
    ims = [image(r) for r in frames("mlwic_examples")[:60]]
    options = {"max_frames": 12, "min_frames": 3}
    full = BackgroundModel(**options)
    for im in ims[:12]:
        full.update(im)
    one = full.nbytes  # a camera with a full day memory
    cams = CameraBackgrounds(max_bytes=one * 7 // 2, **options)
    for cam, start in (("A", 0), ("B", 12), ("C", 24)):
        for im in ims[start : start + 12]:
            cams.update(cam, im)
    assert cams.nbytes == 3 * one and cams.evictions == 0
    assert cams.foreground("B", ims[40]) is not None  # looking is no use: B stays oldest
    cams.update("A", ims[40])  # A is now the most recent
    with caplog.at_level(logging.INFO, logger="edge.background"):
        for im in ims[36:48]:
            cams.update("D", im)
    assert "B" not in cams and {"A", "C", "D"} <= set(cams.state())
    assert cams.evictions == 1 and cams.nbytes <= one * 7 // 2
    drops = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(drops) == 1 and drops[0].levelno == logging.INFO and "B" in drops[0].getMessage()
    assert cams.state()["A"] == {"colour": 12, "ir": 0}  # kept whole
    assert cams.foreground("B", ims[50]) is None  # B starts again
    assert "B" not in cams  # and looking made no model for it
    for im in ims[50:53]:
        cams.update("B", im)
    assert cams.foreground("B", ims[55]) is not None
    assert cams.nbytes <= one * 7 // 2
    with pytest.raises(ValueError, match="max_bytes"):
        CameraBackgrounds(max_bytes=full.max_nbytes - 1, **options)


# ----------------------------------------------------------------------------- plain arrays


def test_synthetic_object_on_a_noisy_scene() -> None:
    rng = np.random.default_rng(1)
    scene = rng.integers(40, 200, (96, 128, 3)).astype(np.uint8)
    bg = BackgroundModel(size=(48, 64), min_frames=5)
    for k in range(8):  # slow light change: each frame a little brighter
        noisy = np.clip(scene.astype(int) * (1 + 0.02 * k) + rng.normal(0, 3, scene.shape), 0, 255)
        bg.update(noisy.astype(np.uint8))
    frame = np.clip(scene.astype(int) * 1.2, 0, 255).astype(np.uint8)
    frame[48:96, 64:128] = [250, 20, 20]  # an object in the bottom-right quadrant
    fg = bg.foreground(frame)
    assert fg is not None and fg.shape == (48, 64)
    assert fg[26:, 34:].mean() > 0.9  # inside (away from the blurred border)
    assert fg[:22].mean() < 0.05 and fg[:, :30].mean() < 0.05


def test_bad_input_is_refused() -> None:
    bg = BackgroundModel()
    with pytest.raises(ValueError, match="uint8"):
        bg.update(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError, match="RGB"):
        bg.update(np.zeros((10, 10, 4), np.uint8))
    with pytest.raises(ValueError, match="z_low"):
        BackgroundModel(z_low=5, z_high=2)


def test_combine_masks() -> None:
    learned = np.zeros((4, 4), np.float32)
    learned[:, :2] = 0.81
    background = np.zeros((8, 8), np.float32)
    background[:4] = 1.0  # top half, at another size
    g = combine_masks(learned, background)
    assert g.shape == (4, 4)
    assert g[:2, :2] == pytest.approx(0.9)  # sqrt(0.81 * 1): both agree
    assert g[2:].max() == 0.0 and g[:, 2:].max() == 0.0  # either says no: no
    assert combine_masks(learned, background, how="max")[2:, :2] == pytest.approx(0.81)
    assert combine_masks(learned, background, how="mean")[:2, 2:] == pytest.approx(0.5)
    assert combine_masks(learned, background, how="product")[0, 0] == pytest.approx(0.81)
    assert combine_masks(learned, background, how="min", shape=(2, 2)).shape == (2, 2)
    with pytest.raises(ValueError, match="how"):
        combine_masks(learned, background, how="sum")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        combine_masks(learned * 3, background)


def test_pick_mask_names_its_source() -> None:
    a = np.ones((4, 4), np.float32)
    assert pick_mask(a, a)[1] == "combined"
    assert pick_mask(a, None)[1] == "segmenter"
    assert pick_mask(None, a)[1] == "background"
    assert pick_mask(None, None) == (None, None)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17])
def test_the_median_network_is_the_median(k: int) -> None:
    from edge.background import _median0

    rng = np.random.default_rng(k)
    for a in (rng.random((k, 3, 9, 7)), rng.integers(0, 4, (k, 3, 9, 7))):  # ties too
        a = a.astype(np.float32)
        kept = a.copy()
        m = _median0(a)
        np.testing.assert_array_equal(m, np.median(kept, axis=0))
        np.testing.assert_array_equal(a, kept)  # a is read, not written
        assert not np.shares_memory(m, a)  # the caller may overwrite a and keep m


@pytest.mark.parametrize("n", [1, 2, 3, 168, 169, 1024])
def test_the_gain_median_is_the_median(n: int) -> None:
    from edge.background import _median_last

    rng = np.random.default_rng(n)
    for a in (rng.random((5, 3, n)), rng.integers(0, 3, (5, 3, n))):
        a = a.astype(np.float32)
        np.testing.assert_array_equal(_median_last(a), np.median(a, axis=-1))
