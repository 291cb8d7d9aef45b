"""Over-MAP measures on hand-made arrays with known answers, and on real pet trimaps."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.masks import mask_from_file
from edge.overmap import (
    MEASURES,
    FrameScore,
    binarize,
    dice,
    energy,
    entropy,
    iou_at,
    overmap,
    pointing_game,
    register_measure,
    score_frame,
    softmax,
    upsample,
)

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"

PETS = SHARED / "pets-masks"


def corner_map(shape: tuple[int, int], corner: str) -> np.ndarray:
    """A map hot in one quadrant: 'tl', 'tr', 'bl', 'br' (row = y, col = x)."""
    h, w = shape
    m = np.zeros(shape)
    ys = slice(0, h // 2) if corner[0] == "t" else slice(h - h // 2, h)
    xs = slice(0, w // 2) if corner[1] == "l" else slice(w - w // 2, w)
    m[ys, xs] = 1.0
    return m


# ----------------------------------------------------------------------------- orientation


@pytest.mark.parametrize("shape", [(8, 8), (6, 10), (10, 4)])
def test_orientation_quadrants_non_square(shape: tuple[int, int]) -> None:
    mask = corner_map(shape, "tl")
    assert energy(corner_map(shape, "tl"), mask) == pytest.approx(1.0)
    for other in ("tr", "bl", "br"):
        assert energy(corner_map(shape, other), mask) == pytest.approx(0.0)


def test_x_and_y_are_not_swapped_on_a_wide_frame() -> None:
    # mask: the left third of a wide frame (x < W/3), map hot in one column block of 3x9
    mask = np.zeros((60, 180))
    mask[:, :60] = 1
    cam = np.zeros((3, 9))
    cam[:, 0:3] = 1.0  # the left third in x
    assert energy(cam, mask) > 0.9
    cam_t = np.zeros((3, 9))
    cam_t[0, :] = 1.0  # the top row in y: only a third of it falls on the left
    assert energy(cam_t, mask) == pytest.approx(1 / 3, abs=0.05)


def test_upsampling_7_to_224_is_bilinear_and_aligned() -> None:
    cam = np.zeros((7, 7))
    cam[3, 3] = 1.0
    up = upsample(cam, (224, 224))
    assert up.shape == (224, 224)
    y, x = np.unravel_index(up.argmax(), up.shape)
    assert abs(y - 111.5) <= 16 and abs(x - 111.5) <= 16  # the peak stays in the centre cell
    assert np.allclose(up, up.T)  # symmetric map stays symmetric: no x/y swap
    assert np.allclose(up, up[::-1, ::-1])
    assert up.min() >= 0 and 0 < up.max() <= 1.0
    # a top-left 7x7 map against a top-left 224x224 mask
    cam = corner_map((7, 7), "tl")  # rows/cols 0..2 of 7
    mask = np.zeros((224, 224))
    mask[:112, :112] = 1
    assert energy(cam, mask) > 0.9
    assert energy(cam, 1 - mask) < 0.1


def test_negative_map_values_are_clipped() -> None:
    mask = corner_map((4, 4), "tl")
    cam = corner_map((4, 4), "tl") - 5 * corner_map((4, 4), "br")
    assert energy(cam, mask) == pytest.approx(1.0)


# ----------------------------------------------------------------------------- edge cases


def test_empty_mask_and_zero_map_give_zero() -> None:
    cam = corner_map((7, 7), "tl")
    empty = np.zeros((32, 32))
    for name in MEASURES:
        assert overmap(cam, empty, measure=name) == 0.0, name
        assert overmap(np.zeros((7, 7)), np.ones((32, 32)), measure=name) == 0.0, name


def test_nan_is_refused_unless_asked() -> None:
    cam = corner_map((4, 4), "tl")
    cam[3, 3] = np.nan
    mask = corner_map((4, 4), "tl")
    with pytest.raises(ValueError, match="nan='zero'"):
        energy(cam, mask)
    assert energy(cam, mask, nan="zero") == pytest.approx(1.0)
    bad_mask = mask.copy()
    bad_mask[0, 0] = np.inf
    with pytest.raises(ValueError, match="mask"):
        energy(corner_map((4, 4), "tl"), bad_mask)


def test_bad_shapes_and_ranges_are_refused() -> None:
    with pytest.raises(ValueError, match="same rank"):
        energy(np.ones((2, 7, 7)), np.ones((7, 7)))
    with pytest.raises(ValueError, match="batch sizes"):
        energy(np.ones((2, 7, 7)), np.ones((3, 7, 7)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        energy(np.ones((7, 7)), np.full((7, 7), 2.0))
    with pytest.raises(ValueError, match="unknown measure"):
        overmap(np.ones((7, 7)), np.ones((7, 7)), measure="nope")


# ----------------------------------------------------------------------------- soft masks


def test_soft_mask_weights_energy() -> None:
    cam = np.ones((4, 4))
    assert energy(cam, np.full((4, 4), 0.25)) == pytest.approx(0.25)
    half = np.zeros((4, 4))
    half[:, :2] = 0.5
    assert energy(cam, half) == pytest.approx(0.25)


def test_soft_iou_and_dice() -> None:
    cam = corner_map((4, 4), "tl")  # B = top-left 2x2 (4 pixels)
    soft = corner_map((4, 4), "tl") * 0.5
    # soft IoU = sum(min) / sum(max) = 4*0.5 / 4*1
    assert iou_at(cam, soft) == pytest.approx(0.5)
    # soft Dice = 2 * 2 / (4 + 2)
    assert dice(cam, soft) == pytest.approx(2 / 3)
    # binary: IoU of a 2x2 block with a 2x4 block = 4/8, Dice = 8/12
    mask = np.zeros((4, 4))
    mask[:2, :] = 1
    assert iou_at(cam, mask) == pytest.approx(0.5)
    assert dice(cam, mask) == pytest.approx(2 / 3)


# ----------------------------------------------------------------------------- thresholds


def test_frac_threshold_and_top_k() -> None:
    cam = np.arange(16, dtype=float).reshape(1, 4, 4)  # values 0..15, max 15
    assert binarize(cam, frac=0.5).sum() == 8  # >= 7.5: 8..15
    assert binarize(cam, frac=1.0).sum() == 1
    b = binarize(cam, top_k=25)  # 4 of 16 pixels, the largest: 12..15 = the bottom row
    assert b.sum() == 4 and b[0, 3].all()
    tie = np.ones((1, 4, 4))
    assert binarize(tie, top_k=10).sum() == 2  # ceil(1.6): exact count even with ties
    with pytest.raises(ValueError):
        binarize(cam, frac=0.0)
    with pytest.raises(ValueError):
        binarize(cam, top_k=150)
    mask = np.zeros((4, 4))
    mask[3] = 1
    assert iou_at(cam[0], mask, top_k=25) == pytest.approx(1.0)
    assert iou_at(cam[0], mask, frac=0.5) == pytest.approx(0.5)


def test_pointing_game() -> None:
    mask = corner_map((6, 10), "br")
    cam = np.zeros((6, 10))
    cam[5, 9] = 1.0
    assert pointing_game(cam, mask) == 1.0
    cam2 = np.zeros((6, 10))
    cam2[0, 9] = 1.0  # top-right: x right but y wrong
    assert pointing_game(cam2, mask) == 0.0
    assert pointing_game(cam, mask * 0.5) == 0.0  # on the animal means S > 0.5


# ----------------------------------------------------------------------------- batch, registry


def test_batch_matches_single() -> None:
    rng = np.random.default_rng(0)
    maps = rng.random((5, 7, 7))
    masks = (rng.random((5, 32, 48)) > 0.6).astype(float)
    for name in MEASURES:
        batch = overmap(maps, masks, measure=name)
        assert isinstance(batch, np.ndarray) and batch.shape == (5,)
        single = [overmap(m, s, measure=name) for m, s in zip(maps, masks, strict=True)]
        assert np.allclose(batch, single), name


def test_register_measure() -> None:
    def peak_value(map: np.ndarray, mask: np.ndarray, **_: object) -> float:
        return float(np.asarray(mask).max())

    register_measure("test_peak", peak_value)
    try:
        assert overmap(np.ones((2, 2)), np.full((2, 2), 0.3), measure="test_peak") == 0.3
        with pytest.raises(ValueError, match="already registered"):
            register_measure("test_peak", peak_value)
    finally:
        MEASURES.pop("test_peak")


# ----------------------------------------------------------------------------- probabilities


def test_softmax_is_stable_and_entropy() -> None:
    p = softmax(np.array([1000.0, 1000.0, -1000.0]))
    assert np.allclose(p, [0.5, 0.5, 0.0])
    assert entropy(p) == pytest.approx(np.log(2))
    assert entropy(np.ones(4) / 4, normalise=True) == pytest.approx(1.0)
    assert entropy(np.eye(3)[0]) == pytest.approx(0.0)
    with pytest.raises(ValueError):
        softmax(np.array([np.nan, 1.0]))


def test_score_frame() -> None:
    probs = softmax(np.array([0.0, 3.0, 1.0]))
    cam = corner_map((7, 7), "tl")
    mask = np.zeros((64, 96))
    mask[:32, :48] = 1
    fs = score_frame(probs, cam, mask, classes=["empty", "elk", "bobcat"], top_k=2)
    assert isinstance(fs, FrameScore)
    assert (fs.label, fs.class_index) == ("elk", 1)
    assert fs.softmax == pytest.approx(probs[1])
    assert [n for n, _ in fs.top_k] == ["elk", "bobcat"]
    assert fs.overmap > 0.9 and fs.measure == "energy" and fs.mask_source == "segmenter"
    assert fs.foreground_fraction == pytest.approx(0.25)
    assert fs.map.shape == fs.mask.shape == (64, 96)
    fs2 = score_frame(probs, cam, mask, classes=["a", "b", "c"], measure="iou", mask_source="boxes")
    assert fs2.measure == "iou" and fs2.mask_source == "boxes"
    with pytest.raises(ValueError, match="softmax"):
        score_frame(np.array([3.0, 1.0, 0.0]), cam, mask, classes=["a", "b", "c"])
    with pytest.raises(ValueError, match="class names"):
        score_frame(probs, cam, mask, classes=["a", "b"])


# ----------------------------------------------------------------------------- real trimaps


def _pet_masks(n: int) -> list[Path]:
    with open(PETS / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return [PETS / r["mask"] for r in rows[:: max(1, len(rows) // n)][:n]]


@pytest.mark.skipif(not PETS.is_dir(), reason="reference data not present")
def test_real_pet_masks_self_and_inverse() -> None:
    for path in _pet_masks(8):
        mask, valid = mask_from_file(path)
        assert 0.02 < mask.mean() < 0.98
        # the mask itself as the map, at a lower resolution like a CAM
        small = cv2.resize(
            mask, (mask.shape[1] // 8, mask.shape[0] // 8), interpolation=cv2.INTER_AREA
        )
        assert energy(mask, mask) == pytest.approx(1.0)
        assert iou_at(mask, mask) == pytest.approx(1.0)
        assert pointing_game(mask, mask) == 1.0
        assert energy(1 - mask, mask) == pytest.approx(0.0)
        assert energy(small, mask) > 0.75  # a CAM-sized map: upsampling blurs the border
        assert energy((1 - mask) * valid, mask) == pytest.approx(0.0)
        # a map on the trimap's unsure boundary only is excluded by the validity mask
        boundary = 1 - valid
        assert energy(boundary * valid, mask) == 0.0
