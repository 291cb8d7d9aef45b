"""edge.preprocess on hand-made images whose right answer is known by construction."""

from __future__ import annotations

import numpy as np
import pytest

from edge.bundle import InputSpec
from edge.preprocess import CROP_RATIO, normalise, prepare, resize_frame


def spec(size: tuple[int, int], resize: str = "stretch", **kw: object) -> InputSpec:
    base = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}
    return InputSpec(size=size, resize=resize, **(base | kw))  # type: ignore[arg-type]


def quadrants(h: int, w: int) -> np.ndarray:
    """Four flat colours, one per quadrant: resizing keeps each where it was."""
    im = np.zeros((h, w, 3), np.uint8)
    im[: h // 2, : w // 2] = (255, 0, 0)
    im[: h // 2, w // 2 :] = (0, 255, 0)
    im[h // 2 :, : w // 2] = (0, 0, 255)
    im[h // 2 :, w // 2 :] = (255, 255, 255)
    return im


def test_stretch_keeps_the_whole_frame() -> None:
    out = resize_frame(quadrants(100, 200), spec((10, 10)))
    assert out.shape == (10, 10, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[2, 2], (255, 0, 0))
    np.testing.assert_array_equal(out[2, 7], (0, 255, 0))
    np.testing.assert_array_equal(out[7, 2], (0, 0, 255))
    np.testing.assert_array_equal(out[7, 7], (255, 255, 255))


def test_center_crop_drops_the_sides() -> None:
    """A 100x400 frame: short side to 8/0.875 -> ~9 px, width ~37, centre 8x8 kept.

    Columns 0..150 are red, 150..250 green, 250..400 blue: the centre crop sees green only."""
    im = np.zeros((100, 400, 3), np.uint8)
    im[:, :150] = (255, 0, 0)
    im[:, 150:250] = (0, 255, 0)
    im[:, 250:] = (0, 0, 255)
    out = resize_frame(im, spec((8, 8), "center_crop"))
    assert out.shape == (8, 8, 3)
    assert (out[:, 2:6, 1] > 200).all() and (out[:, 2:6, [0, 2]] < 50).all()


def test_center_crop_224_matches_the_imagenet_recipe() -> None:
    """Short side 256, centre 224: the crop is the middle 224/256 of the frame."""
    im = np.zeros((512, 768, 3), np.uint8)
    im[:, :, 0] = np.arange(768)[None, :] // 3  # red encodes the column
    out = resize_frame(im, spec((224, 224), "center_crop"))
    assert out.shape == (224, 224, 3)
    assert round(224 / CROP_RATIO) == 256
    # resized width 384 (scale 0.5), crop starts at column (384 - 224) // 2 = 80 -> source 160
    assert abs(int(out[100, 0, 0]) - 160 // 3) <= 1
    assert abs(int(out[100, 223, 0]) - (2 * (80 + 223)) // 3) <= 1


def test_letterbox_keeps_aspect_and_pads_with_mean() -> None:
    im = np.full((50, 200, 3), 255, np.uint8)  # 4:1, white
    s = spec((40, 40), "letterbox", mean=(10.0, 20.0, 30.0))
    out = resize_frame(im, s)
    assert out.shape == (40, 40, 3)
    # scaled to 40x10, centred vertically: rows 15..25 white, the rest the mean colour
    assert (out[15:25] == 255).all()
    np.testing.assert_array_equal(out[:15].reshape(-1, 3), np.tile((10, 20, 30), (15 * 40, 1)))
    np.testing.assert_array_equal(out[25:].reshape(-1, 3), np.tile((10, 20, 30), (15 * 40, 1)))


def test_normalise_values_layout_and_bgr() -> None:
    frames = np.zeros((2, 3, 4, 3), np.uint8)
    frames[..., 0], frames[..., 1], frames[..., 2] = 10, 20, 30  # R, G, B
    rgb = normalise(frames, spec((3, 4), mean=(10.0, 10.0, 10.0), std=(2.0, 5.0, 10.0)))
    assert rgb.shape == (2, 3, 3, 4) and rgb.dtype == np.float32 and rgb.flags.c_contiguous
    np.testing.assert_allclose(rgb[:, 0], 0.0)  # (10 - 10) / 2
    np.testing.assert_allclose(rgb[:, 1], 2.0)  # (20 - 10) / 5
    np.testing.assert_allclose(rgb[:, 2], 2.0)  # (30 - 10) / 10
    bgr = normalise(frames, spec((3, 4), color_order="BGR"))
    np.testing.assert_allclose(bgr[:, 0], 30.0)  # channel 0 is blue in BGR
    np.testing.assert_allclose(bgr[:, 2], 10.0)


@pytest.mark.parametrize("order", ["RGB", "BGR"])
def test_normalise_is_the_plain_formula_exactly(order: str) -> None:
    """The plane-at-a-time normalise gives the same float32 bits as the textbook one."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 32, 24, 3), dtype=np.uint8)
    s = spec(
        (32, 24), mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375), color_order=order
    )
    x = frames.astype(np.float32)[..., ::-1] if order == "BGR" else frames.astype(np.float32)
    plain = (x - np.asarray(s.mean, np.float32)) / np.asarray(s.std, np.float32)
    np.testing.assert_array_equal(normalise(frames, s), plain.transpose(0, 3, 1, 2))


def test_prepare_mixed_sizes_and_empty() -> None:
    batch = prepare([quadrants(30, 40), quadrants(480, 640)], spec((16, 16)))
    assert batch.shape == (2, 3, 16, 16)
    np.testing.assert_allclose(batch[0], batch[1])  # same picture at two resolutions
    with pytest.raises(ValueError, match="at least one"):
        prepare([], spec((16, 16)))
