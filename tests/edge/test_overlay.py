"""The review overlay shows the frame as the model saw it, the map where the model looked, the
mask's outline, and comes back from its JPEG as the same picture."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.bundle import InputSpec, load_bundle
from edge.decode import load_image
from edge.overlay import BANNER, render, write_overlay
from edge.preprocess import resize_frame
from edge.runtime import Runtime

SPEC = InputSpec(size=(224, 224), mean=(127.0,) * 3, std=(128.0,) * 3, resize="stretch")
CROP = InputSpec(size=(224, 224), mean=(127.0,) * 3, std=(128.0,) * 3, resize="center_crop")
TEXT = {"label": "elk  (segmenter mask)", "scores": {"softmax": 0.9, "overmap": 0.4}}


@pytest.fixture(scope="module")
def frame(colour_frame: Path) -> np.ndarray:
    return load_image(colour_frame)  # real 768x576 day frame


def plain(image: np.ndarray, spec: InputSpec) -> np.ndarray:
    """The body with no heat and no outline: the view upscaled to 448x448."""
    return render(image, np.zeros((7, 7), np.float32), None, spec, **TEXT)[BANNER:]


def disc(size: int, centre: tuple[float, float], radius: float) -> np.ndarray:
    """A soft disc mask (coordinates as fractions of the side): 0.5 exactly on the circle."""
    yy, xx = np.mgrid[:size, :size] + 0.5
    d = np.hypot(xx - centre[0] * size, yy - centre[1] * size)
    return np.clip(0.5 + (radius * size - d) / 2, 0, 1).astype(np.float32)


def test_heat_sits_where_the_map_is_hot_and_the_outline_where_the_mask_ends(tmp_path: Path):
    grey = np.full((300, 400, 3), 100, np.uint8)
    cam = np.zeros((7, 7), np.float32)
    cam[1, 5] = 1.0  # hot near the top right (row = y, col = x)
    mask = np.zeros((28, 28), np.float32)
    mask[14:, :14] = 1.0  # animal in the bottom left
    out = render(grey, cam, mask, SPEC, label="elk", scores={"softmax": 0.9}, width=448)
    assert out.shape == (BANNER + 448, 448, 3)
    body = out[BANNER:].astype(int)
    redness = body[..., 0] - body[..., 2]
    y, x = np.unravel_index(np.argmax(redness), redness.shape)
    assert y < 448 * 3 / 7 and x > 448 * 4 / 7  # the top right, not flipped
    white = (body > 240).all(axis=-1)
    ys, xs = np.nonzero(white)
    assert ys.min() > 448 * 0.4 and xs.max() < 448 * 0.6  # the outline bounds the bottom left
    assert (out[:BANNER] != 24).any()  # the banner carries text

    path = write_overlay(tmp_path / "o" / "frame.jpg.overmap.jpg", out)
    back = cv2.imread(str(path))
    assert back is not None and back.shape == out.shape
    assert not list(path.parent.glob("*.tmp"))


def test_on_a_real_frame_the_heat_is_strongest_in_the_hot_cell_and_nil_far_from_it(frame):
    cam = np.zeros((7, 7), np.float32)
    cam[1, 5] = 2.5  # any scale: the map is shown relative to its peak
    cam[3, 3] = 1.0  # a weaker second spot
    body = render(frame, cam, None, CROP, **TEXT)[BANNER:]
    change = np.abs(body.astype(int) - plain(frame, CROP)).sum(-1)
    cells = change.reshape(7, 64, 7, 64).mean(axis=(1, 3))  # 448 / 7 = 64 px per map cell
    assert np.unravel_index(np.argmax(cells), cells.shape) == (1, 5)
    assert cells[1, 5] > cells[3, 3] > 0  # alpha grows with strength
    assert change[5 * 64 :, : 2 * 64].max() == 0  # two cells away from any heat: untouched
    hot = body[64:128, 5 * 64 : 6 * 64].astype(int)
    assert (hot[..., 0] - hot[..., 2]).mean() > 40  # the peak is drawn red (RGB order)


def test_the_outline_is_white_on_the_mask_boundary_all_round(frame):
    centre, radius = (0.45, 0.6), 0.2
    mask = disc(56, centre, radius)  # the segmenter's grid
    out = render(frame, np.ones((7, 7), np.float32), mask, CROP, **TEXT)
    without = render(frame, np.ones((7, 7), np.float32), None, CROP, **TEXT)
    assert np.array_equal(out[:BANNER], without[:BANNER])
    drawn = (out[BANNER:] != without[BANNER:]).any(-1)
    assert (out[BANNER:][drawn] == 255).all()  # pure white, nothing else changed
    ys, xs = np.nonzero(drawn)
    dx, dy = xs + 0.5 - centre[0] * 448, ys + 0.5 - centre[1] * 448
    off = np.hypot(dx, dy) - radius * 448  # traced on the view's pixels (2 px here), drawn 2 wide
    assert np.abs(off).max() < 4.5 and abs(np.median(off)) < 1.5  # on the circle
    angles = np.degrees(np.arctan2(dy, dx)) % 360
    assert len(np.unique((angles // 10).astype(int))) == 36  # and closed all the way round


def test_passing_the_view_gives_the_same_picture(frame, tiny_bundle: Path):
    bundle = load_bundle(tiny_bundle)
    spec = bundle.manifest.classifier.input
    res = Runtime.from_bundle(bundle, threads=1).run([frame])  # real map and mask
    cam, mask = res.cam[0], res.foreground[0, 0]
    view = resize_frame(frame, spec)
    a = render(frame, cam, mask, spec, **TEXT)
    b = render(frame, cam, mask, spec, view=view, **TEXT)
    assert a.shape == (BANNER + 448, 448, 3) and np.array_equal(a, b)
    for crop in (CROP, SPEC):
        v = resize_frame(frame, crop)
        assert np.array_equal(
            render(frame, cam, mask, crop, view=v, **TEXT), render(frame, cam, mask, crop, **TEXT)
        )
    with pytest.raises(ValueError, match="view"):
        render(frame, cam, mask, CROP, view=frame, **TEXT)  # the frame, not the view


def test_the_jpeg_comes_back_the_same_size_and_colours(frame, tmp_path: Path):
    cam = np.zeros((7, 7), np.float32)
    cam[2:5, 1:3] = 1.0
    out = render(frame, cam, disc(28, (0.3, 0.5), 0.25), CROP, **TEXT)
    path = write_overlay(tmp_path / "overlays" / "a" / "f.jpg.overmap.jpg", out)
    assert path.is_file() and not list(path.parent.glob("*.tmp"))
    back = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert back is not None and back.shape == out.shape
    err = np.abs(cv2.cvtColor(back, cv2.COLOR_BGR2RGB).astype(int) - out)
    assert err.mean() < 4  # the same picture; swapped channels would be far off
    write_overlay(path, plain(frame, CROP))  # a second write replaces the first
    assert cv2.imread(str(path)).shape == (448, 448, 3)


def test_a_flat_map_and_no_mask_show_the_view_untouched():
    image = np.random.default_rng(0).integers(0, 256, (50, 80, 3), dtype=np.uint8)
    out = render(image, np.zeros((7, 7), np.float32), None, SPEC, label="empty", scores={})
    assert out.dtype == np.uint8 and out.shape == (BANNER + 448, 448, 3)
    up = cv2.resize(resize_frame(image, SPEC), (448, 448), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(out[BANNER:], up)
    nan = np.full((7, 7), np.nan, np.float32)
    assert np.array_equal(render(image, nan, None, SPEC, label="empty", scores={}), out)
