"""The review overlay shows the whole frame at its own aspect, the part the model saw where it
lies in the frame (the rest dimmed for a centre crop), the map where the model looked, the
mask's outline, and comes back from its JPEG as the same picture."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.bundle import InputSpec, load_bundle
from edge.decode import load_image
from edge.overlay import (
    BANNER,
    DIM_SHIFT,
    VIEW_LINE,
    draw_overlay,
    pack_overlay,
    render,
    unpack_overlay,
    view_place,
    write_overlay,
)
from edge.preprocess import resize_frame
from edge.runtime import Runtime

CAMTRAP = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "camtrap"

SPEC = InputSpec(size=(224, 224), mean=(127.0,) * 3, std=(128.0,) * 3, resize="stretch")
CROP = SPEC.model_copy(update={"resize": "center_crop"})
LETTERBOX = SPEC.model_copy(update={"resize": "letterbox"})
MODES = [CROP, SPEC, LETTERBOX]
TEXT = {"label": "elk  (segmenter mask)", "scores": {"softmax": 0.9, "overmap": 0.4}}
FLAT = np.zeros((7, 7), np.float32)

# real frames of several shapes: 4:3, square, 16:9, 1024x692, 640x640
FRAMES = [
    "peru_s90_animl/S90_SDZG1/EK000001.JPG",
    "mlwic_examples/CA-01/CA-01_0007430.jpg",
    "ecoassist_test/empty/empty.jpg",
    "animl_jaguar/RL_7/RL_7_20051004_1735.jpg",
    "pw_squirrels_mct/alka_squirrels_seqdd0bf15a/frame102567.jpg",
]


def real(name: str) -> np.ndarray:
    path = CAMTRAP / name
    if not path.is_file():
        pytest.skip(f"reference data missing: {path}")
    return load_image(path)


@pytest.fixture(scope="module")
def frame(colour_frame: Path) -> np.ndarray:
    return load_image(colour_frame)  # real 768x576 day frame


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    """The real frames above, and the first one turned upright (3:4)."""
    images = [real(n) for n in FRAMES]
    return [*images, np.ascontiguousarray(np.rot90(images[0]))]


def box(image: np.ndarray, spec: InputSpec, width: int = 448) -> tuple[int, int, int, int]:
    """Where the part of the view that shows the frame lies in the overlay's body, in pixels."""
    ih, iw = image.shape[:2]
    h = round(ih * width / iw)
    fx0, fy0, fx1, fy1 = view_place((ih, iw), spec).box
    return round(fx0 * width), round(fy0 * h), round(fx1 * width), round(fy1 * h)


def to_body(image: np.ndarray, spec: InputSpec, x: float, y: float) -> tuple[float, float]:
    """A point of the view (continuous view pixels) in the overlay's body."""
    cx0, cy0, cx1, cy1 = view_place(image.shape[:2], spec).crop
    x0, y0, x1, y1 = box(image, spec)
    return x0 + (x - cx0) * (x1 - x0) / (cx1 - cx0), y0 + (y - cy0) * (y1 - y0) / (cy1 - cy0)


def plain(image: np.ndarray, spec: InputSpec) -> np.ndarray:
    """The body with no heat and no outline."""
    return render(image, FLAT, None, spec, **TEXT)[BANNER:]


def disc(size: int, centre: tuple[float, float], radius: float) -> np.ndarray:
    """A soft disc mask (coordinates as fractions of the side): 0.5 exactly on the circle."""
    yy, xx = np.mgrid[:size, :size] + 0.5
    d = np.hypot(xx - centre[0] * size, yy - centre[1] * size)
    return np.clip(0.5 + (radius * size - d) / 2, 0, 1).astype(np.float32)


def blur(a: np.ndarray) -> np.ndarray:
    """Both pictures at about the view's sharpness, to compare what they show."""
    return cv2.GaussianBlur(a.astype(np.float32), (0, 0), 2)


@pytest.mark.parametrize("size", [(224, 224), (192, 256)])
@pytest.mark.parametrize("resize", ["center_crop", "stretch", "letterbox"])
def test_the_place_is_where_resize_frame_takes_its_view_from(frames, size, resize):
    """Resizing a real frame to the place's scale and cutting it at the place's offset gives
    resize_frame's view bit for bit, for frames of every shape (portrait too)."""
    spec = SPEC.model_copy(update={"size": size, "resize": resize})
    h, w = size
    for image in frames:
        ih, iw = image.shape[:2]
        view = resize_frame(image, spec)
        (cx0, cy0, cx1, cy1), (fx0, fy0, fx1, fy1) = view_place((ih, iw), spec)
        assert 0 <= fx0 < fx1 <= 1 and 0 <= fy0 < fy1 <= 1
        assert 0 <= cx0 < cx1 <= w and 0 <= cy0 < cy1 <= h
        if resize == "center_crop":
            assert (cx0, cy0, cx1, cy1) == (0, 0, w, h)  # all of the view shows the frame
            assert fx0 > 0 and fy0 > 0 and fx1 < 1 and fy1 < 1  # and not all of the frame
            rw, rh = round(w / (fx1 - fx0)), round(h / (fy1 - fy0))  # the frame resized
            x, y = round(fx0 * rw), round(fy0 * rh)
            assert (x + w) / rw == pytest.approx(fx1) and (y + h) / rh == pytest.approx(fy1)
            resized = cv2.resize(image, (rw, rh), interpolation=cv2.INTER_AREA)
            assert np.array_equal(resized[y : y + h, x : x + w], view)
            assert abs(rw / rh - iw / ih) < 2 / min(rw, rh)  # the aspect kept
        else:
            assert (fx0, fy0, fx1, fy1) == (0, 0, 1, 1)  # all of the frame is seen
            seen = view[cy0:cy1, cx0:cx1]
            small = cv2.resize(image, (cx1 - cx0, cy1 - cy0), interpolation=cv2.INTER_AREA)
            assert np.array_equal(seen, small)
            pad = np.ones((h, w), bool)
            pad[cy0:cy1, cx0:cx1] = False
            assert (view[pad] == 127).all()  # only the mean colour outside
            if resize == "stretch":
                assert (cx0, cy0, cx1, cy1) == (0, 0, w, h)
            else:
                assert cx0 == 0 or cy0 == 0  # fitted to the view one way
                assert cx1 - cx0 == w or cy1 - cy0 == h
                assert abs((cx1 - cx0) / (cy1 - cy0) - iw / ih) < 2 / min(cx1 - cx0, cy1 - cy0)


def test_every_frame_comes_out_448_wide_at_its_own_aspect(frames):
    for image in frames:
        ih, iw = image.shape[:2]
        for spec in MODES:
            out = render(image, FLAT, None, spec, **TEXT)
            assert out.dtype == np.uint8 and out.shape == (BANNER + round(ih * 448 / iw), 448, 3)
    sliver = np.ascontiguousarray(np.tile(frames[0][:, 380:383], (4, 1, 1)))  # 3 x 2304 px
    for spec in MODES:  # a freak file does not make a 300 000 px tall picture
        assert render(sliver, FLAT, None, spec, **TEXT).shape == (BANNER + 896, 448, 3)


@pytest.mark.parametrize("spec", MODES, ids=lambda s: s.resize)
def test_heat_sits_where_the_map_is_hot_and_the_outline_where_the_mask_ends(tmp_path, spec):
    grey = np.full((300, 400, 3), 100, np.uint8)
    cam = np.zeros((7, 7), np.float32)
    cam[1, 5] = 1.0  # hot near the top right (row = y, col = x)
    mask = np.zeros((28, 28), np.float32)
    mask[14:, :14] = 1.0  # animal in the bottom left
    out = render(grey, cam, mask, spec, label="elk", scores={"softmax": 0.9}, width=448)
    assert out.shape == (BANNER + 336, 448, 3)  # 400x300 at 448 wide
    body = out[BANNER:].astype(int)
    redness = body[..., 0] - body[..., 2]
    y, x = np.unravel_index(np.argmax(redness), redness.shape)
    assert y < 336 * 3 / 7 and x > 448 * 4 / 7  # the top right, not flipped
    hx, hy = to_body(grey, spec, 5.5 * 32, 1.5 * 32)  # the hot cell's centre in the body
    assert abs(x - hx) < 448 / 14 and abs(y - hy) < 336 / 14
    white = (body > 240).all(axis=-1)
    ys, xs = np.nonzero(white)
    assert ys.min() > 336 * 0.4 and xs.max() < 448 * 0.6  # the outline bounds the bottom left
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
    x0, y0, x1, y1 = box(frame, CROP)
    inside = change[y0:y1, x0:x1]
    outside = change.copy()
    outside[y0:y1, x0:x1] = 0
    assert outside.max() == 0  # no heat on the part of the frame the model did not see
    cells = cv2.resize(inside.astype(np.float32), (7, 7), interpolation=cv2.INTER_AREA)
    assert np.unravel_index(np.argmax(cells), cells.shape) == (1, 5)
    assert cells[1, 5] > cells[3, 3] > 0  # alpha grows with strength
    ch, cw = (y1 - y0) / 7, (x1 - x0) / 7
    assert inside[round(5 * ch) :, : round(2 * cw)].max() == 0  # two cells away: untouched
    hot = body[y0 + round(ch) : y0 + round(2 * ch), x0 + round(5 * cw) : x0 + round(6 * cw)]
    assert (hot[..., 0].astype(int) - hot[..., 2]).mean() > 40  # the peak red (RGB order)


def test_a_4_3_frame_centre_cropped_shows_the_whole_frame_the_unseen_strips_dimmed(frame):
    assert frame.shape[:2] == (576, 768)
    cam = np.zeros((7, 7), np.float32)
    cam[2:5, 2:5] = 1.0
    out = render(frame, cam, disc(28, (0.5, 0.5), 0.3), CROP, **TEXT)
    assert out.shape == (BANNER + 336, 448, 3)
    body = out[BANNER:].astype(np.float32)
    x0, y0, x1, y1 = box(frame, CROP)
    # the central square of the frame (7/8 of its height), the model's view, in the middle
    assert x1 - x0 == y1 - y0 == round(336 * 0.875)
    assert abs(x0 - (448 - x1)) <= 2 and abs(y0 - (336 - y1)) <= 2  # up to a pixel off centre
    assert x0 > 448 / 7  # a sixth of the frame's width on either side is outside the view
    # the strips outside the view: the frame, half as bright (the 1 px line just outside aside)
    frame_at = cv2.resize(frame, (448, 336), interpolation=cv2.INTER_AREA).astype(np.float32)
    strips = {
        "left": np.s_[y0 + 1 : y1 - 1, : x0 - 1],
        "right": np.s_[y0 + 1 : y1 - 1, x1 + 1 :],
        "top": np.s_[: y0 - 1],
        "bottom": np.s_[y1 + 1 :],
    }
    for where, s in strips.items():
        err = np.abs(body[s] - frame_at[s] / 2**DIM_SHIFT)
        assert err.mean() < 3 and np.percentile(err, 99) < 24, where
        ratio = body[s].mean() / frame_at[s].mean()
        assert 0.45 < ratio < 0.55, where
    # a thin line just outside the view
    line = np.concatenate(
        [
            body[y0 - 1, x0 - 1 : x1 + 1],
            body[y1, x0 - 1 : x1 + 1],
            body[y0 - 1 : y1 + 1, x0 - 1],
            body[y0 - 1 : y1 + 1, x1],
        ]
    )
    assert (line == VIEW_LINE).all()
    # the view: the heat (red-yellow in its middle), the outline, not dimmed
    mid = body[
        y0 + (y1 - y0) * 3 // 7 : y0 + (y1 - y0) * 4 // 7,
        x0 + (x1 - x0) * 3 // 7 : x0 + (x1 - x0) * 4 // 7,
    ]
    assert (mid[..., 0] - mid[..., 2]).mean() > 40
    assert ((body[y0:y1, x0:x1] > 240).all(-1)).sum() > 500  # the outline, inside the view
    flat = plain(frame, CROP).astype(np.float32)[y0:y1, x0:x1]
    assert 0.9 < flat.mean() / frame_at[y0:y1, x0:x1].mean() < 1.1  # full brightness


@pytest.mark.parametrize("spec", [SPEC, LETTERBOX], ids=lambda s: s.resize)
def test_stretch_and_letterbox_show_the_whole_frame_at_its_aspect_nothing_dimmed(frame, spec):
    body = plain(frame, spec)
    assert body.shape == (336, 448, 3)
    assert box(frame, spec) == (0, 0, 448, 336)  # the view is the whole frame
    view = resize_frame(frame, spec)
    cx0, cy0, cx1, cy1 = view_place(frame.shape[:2], spec).crop
    seen = view[cy0:cy1, cx0:cx1]  # stretch: all of it; letterbox: without the padding
    assert np.array_equal(body, cv2.resize(seen, (448, 336), interpolation=cv2.INTER_LINEAR))
    # what it shows is the frame at the frame's aspect, edges included: not squashed, not
    # padded, not dimmed (compared at the view's sharpness)
    frame_at = cv2.resize(frame, (448, 336), interpolation=cv2.INTER_AREA)
    err = np.abs(blur(body) - blur(frame_at))
    for s in (np.s_[:, :60], np.s_[:, -60:], np.s_[:30], np.s_[-30:], np.s_[:, :]):
        assert err[s].mean() < 2.5


@pytest.mark.parametrize("spec", [CROP, LETTERBOX], ids=lambda s: s.resize)
def test_the_outline_is_white_on_the_mask_boundary_all_round(frame, spec):
    centre, radius = (0.45, 0.6), 0.15
    mask = disc(56, centre, radius)  # the segmenter's grid, over the view
    out = render(frame, np.ones((7, 7), np.float32), mask, spec, **TEXT)
    without = render(frame, np.ones((7, 7), np.float32), None, spec, **TEXT)
    assert np.array_equal(out[:BANNER], without[:BANNER])
    drawn = (out[BANNER:] != without[BANNER:]).any(-1)
    assert (out[BANNER:][drawn] == 255).all()  # pure white, nothing else changed
    ys, xs = np.nonzero(drawn)
    cx, cy = to_body(frame, spec, centre[0] * 224, centre[1] * 224)
    r = to_body(frame, spec, (centre[0] + radius) * 224, 0)[0] - cx
    dx, dy = xs + 0.5 - cx, ys + 0.5 - cy
    off = np.hypot(dx, dy) - r  # traced on the view's pixels (1.3-2 px here), drawn 2 wide
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
    assert a.shape == (BANNER + 336, 448, 3) and np.array_equal(a, b)
    for other in MODES:
        v = resize_frame(frame, other)
        assert np.array_equal(
            render(frame, cam, mask, other, view=v, **TEXT), render(frame, cam, mask, other, **TEXT)
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
    assert back is not None and back.shape == out.shape == (BANNER + 336, 448, 3)
    err = np.abs(cv2.cvtColor(back, cv2.COLOR_BGR2RGB).astype(int) - out)
    assert err.mean() < 4  # the same picture; swapped channels would be far off
    square = real(FRAMES[1])
    write_overlay(path, render(square, FLAT, None, CROP, **TEXT))  # a second write replaces
    assert cv2.imread(str(path)).shape == (BANNER + 448, 448, 3)


@pytest.mark.parametrize("spec", MODES, ids=lambda s: s.resize)
def test_a_flat_map_and_no_mask_show_the_frame_untouched_inside_the_view(frame, spec):
    for image in (frame, np.random.default_rng(0).integers(0, 256, (50, 80, 3), dtype=np.uint8)):
        out = render(image, FLAT, None, spec, label="empty", scores={})
        ih, iw = image.shape[:2]
        assert out.dtype == np.uint8 and out.shape == (BANNER + round(ih * 448 / iw), 448, 3)
        x0, y0, x1, y1 = box(image, spec)
        cx0, cy0, cx1, cy1 = view_place((ih, iw), spec).crop
        seen = resize_frame(image, spec)[cy0:cy1, cx0:cx1]
        up = cv2.resize(seen, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
        assert np.array_equal(out[BANNER:][y0:y1, x0:x1], up)
        nan = np.full((7, 7), np.nan, np.float32)
        assert np.array_equal(render(image, nan, None, spec, label="empty", scores={}), out)


# -- drawn later: what the watcher keeps (pack_overlay) and the picture drawn from it ---------


def outline_of(draw, mask: np.ndarray) -> np.ndarray:
    """Where the mask's outline lies in an overlay: the pixels that differ from the same
    overlay drawn without a mask (`draw(mask)` gives the overlay)."""
    return np.any(draw(mask) != draw(None), axis=2)


def near(a: np.ndarray, b: np.ndarray, px: float) -> float:
    """The share of a's set pixels that lie within `px` of one of b's."""
    dist = cv2.distanceTransform((~b).astype(np.uint8), cv2.DIST_L2, 3)
    return float((dist[a] <= px).mean())


@pytest.mark.parametrize("spec", MODES, ids=lambda s: s.resize)
def test_a_packed_overlay_draws_the_picture_render_draws(frame, tiny_bundle: Path, spec):
    bundle = load_bundle(tiny_bundle)
    res = Runtime.from_bundle(bundle, threads=1).run([frame])
    cam = res.cam[0] * 37.0  # the model's real map, at its own resolution, any scale
    masks = {
        "soft disc": disc(224, (0.4, 0.55), 0.25),
        "bool blob": (disc(224, (0.65, 0.35), 0.2) > 0.5) | (disc(224, (0.3, 0.3), 0.1) > 0.5),
    }
    for name, mask in masks.items():
        data = pack_overlay(cam, mask, spec, **TEXT)
        assert isinstance(data, bytes) and len(data) < 8192, name
        stored = unpack_overlay(data)
        assert max(stored.mask.shape) == 64 and stored.cam.shape == cam.shape
        assert stored.spec == spec and stored.label == TEXT["label"]
        assert stored.scores == TEXT["scores"]
        want = render(frame, cam, mask, spec, **TEXT)
        got = draw_overlay(frame, data)
        assert got.shape == want.shape == (BANNER + 336, 448, 3) and got.dtype == np.uint8
        assert np.array_equal(got[:BANNER], want[:BANNER])  # the same label and scores
        diff = np.abs(got.astype(int) - want.astype(int))
        assert diff.mean() < 1.0, name  # float16 map, 64 px mask: the same picture
        a = outline_of(lambda m: render(frame, cam, m, spec, **TEXT), mask)
        b = outline_of(lambda m: draw_overlay(frame, pack_overlay(cam, m, spec, **TEXT)), mask)
        assert a.sum() > 200 and abs(int(b.sum()) - int(a.sum())) < 0.05 * a.sum(), name
        assert near(b, a, 2) > 0.99 and near(a, b, 2) > 0.99, name  # where the outline lies


def test_a_flat_map_and_no_mask_pack_and_draw():
    image = np.full((120, 160, 3), 90, np.uint8)
    data = pack_overlay(np.zeros((14, 14), np.float32), None, CROP, label="x", scores={})
    d = unpack_overlay(data)
    assert d.mask is None and not d.cam.any() and d.scores == {}
    assert np.array_equal(
        draw_overlay(image, data, width=320),
        render(image, FLAT, None, CROP, label="x", scores={}, width=320),
    )


def test_corrupt_or_unknown_overlay_data_is_refused_with_a_reason(frame):
    data = pack_overlay(np.eye(7, dtype=np.float32), disc(224, (0.5, 0.5), 0.3), SPEC, **TEXT)
    version = len(b"EDGEOVL")
    cases = {
        "too short": data[:5],
        "wrong magic": b"JPEG" + data[4:],
        "version 2 is not known": data[:version] + bytes([2]) + data[version + 1 :],
        "corrupt": data[:-4],  # the arrays cut short
        "corrupt overlay data": data[: version + 6] + b"\xff" + data[version + 7 :],  # header
        "bytes of arrays": data[:16] + data[16:].replace(b'"cam":[7,7]', b'"cam":[7,8]'),
    }
    for why, bad in cases.items():
        with pytest.raises(ValueError, match=why):
            draw_overlay(frame, bad)
    spec_bad = data.replace(b'"center_crop"', b'"fisheye"').replace(b'"stretch"', b'"fisheye"')
    with pytest.raises(ValueError, match="input spec"):
        unpack_overlay(spec_bad)
    with pytest.raises(ValueError, match="2-D"):
        pack_overlay(np.zeros((1, 7, 7)), None, SPEC, **TEXT)
