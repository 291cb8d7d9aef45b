"""The picture a person looks at for a review frame: the whole frame, what part of it the model
saw, where it looked, where the animal is, and the scores, readable at a glance.

The frame is shown whole at its own aspect. The part the classifier saw carries the heat and the
mask's outline; with a centre crop the rest of the frame is dimmed and the view framed by a thin
line, so that an animal the model never looked at (at the edges of a 4:3 frame) is still seen.

It is drawn for every review frame, so each step is a single OpenCV call on uint8 data: the
heat's colour and its alpha come from 256-entry tables indexed by the map's strength, the blend
is done at the model's size and upscaled once into its place, the outline is traced at the
model's size and its points scaled, and the JPEG is encoded from a contiguous BGR copy (OpenCV
copies a channel-reversed numpy view slowly, which cost more than the encoding itself).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from edge.bundle import InputSpec
from edge.preprocess import CROP_RATIO, resize_frame

BANNER = 56
HEAT_ALPHA = 0.6  # the heat's opacity where the map peaks; 0 where it is zero
DIM_SHIFT = 1  # the frame outside the model's view at 1 / 2**DIM_SHIFT of its brightness
VIEW_LINE = (200, 200, 200)  # the thin line around the view, just outside it


class Place(NamedTuple):
    """Where the classifier's view lies in its frame.

    `crop` (x0, y0, x1, y1): the part of the view that shows the frame, in view pixels (all of
    it, except a letterbox's padding). `box` (x0, y0, x1, y1): where that part lies in the
    frame, as fractions of the frame's width and height (edges, not pixel centres)."""

    crop: tuple[int, int, int, int]
    box: tuple[float, float, float, float]


def view_place(image_hw: tuple[int, int], spec: InputSpec) -> Place:
    """Where `resize_frame(image, spec)` takes its view from in a frame of `image_hw`: the same
    arithmetic, step for step (edge.preprocess.resize_frame, which this must mirror)."""
    h, w = spec.size
    ih, iw = image_hw
    if spec.resize == "stretch":
        return Place((0, 0, w, h), (0.0, 0.0, 1.0, 1.0))
    if spec.resize == "center_crop":
        scale = max(h, w) / CROP_RATIO / min(ih, iw)
        rh, rw = max(h, round(ih * scale)), max(w, round(iw * scale))
        y, x = (rh - h) // 2, (rw - w) // 2
        return Place((0, 0, w, h), (x / rw, y / rh, (x + w) / rw, (y + h) / rh))
    scale = min(h / ih, w / iw)
    rh, rw = max(1, round(ih * scale)), max(1, round(iw * scale))
    y, x = (h - rh) // 2, (w - rw) // 2
    return Place((x, y, x + rw, y + rh), (0.0, 0.0, 1.0, 1.0))


def _tables() -> tuple[np.ndarray, np.ndarray]:
    """Per strength s (0..255): how much of the view to keep (255 - alpha(s)) and the colour's
    share alpha(s) * jet(s) / 255, both as [256,1,3] uint8 colour maps for cv2.applyColorMap."""
    s = np.arange(256, dtype=np.uint8).reshape(256, 1)
    jet = cv2.applyColorMap(s, cv2.COLORMAP_JET)[..., ::-1].astype(np.float64)  # RGB
    alpha = np.round(np.arange(256) * HEAT_ALPHA)[:, None, None]  # out of 255
    keep = np.repeat(255 - alpha, 3, axis=2).astype(np.uint8)
    colour = np.round(alpha * jet / 255).astype(np.uint8)
    return keep, colour


KEEP, COLOUR = _tables()


def _heat(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The map as uint8 strength at (w, h): upsampled bilinearly, 255 at its peak."""
    m = np.maximum(np.nan_to_num(np.asarray(cam, np.float32)), 0)
    heat = cv2.resize(m, size, interpolation=cv2.INTER_LINEAR)
    peak = float(heat.max())
    return cv2.convertScaleAbs(heat, alpha=255.0 / peak if peak > 0 else 0.0)


def _outline(
    mask: np.ndarray,
    view_size: tuple[int, int],
    crop: tuple[int, int, int, int],
    box: tuple[int, int, int, int],
) -> list:
    """The mask's outer contours, traced at the view's size (smooth enough, and fewer pixels
    than the output) and mapped from the view's `crop` onto the output's `box` (x0, y0, x1, y1
    each), pixel centre to pixel centre."""
    vw, vh = view_size
    m = cv2.resize(np.asarray(mask, np.float32), (vw, vh), interpolation=cv2.INTER_LINEAR) > 0.5
    contours, _ = cv2.findContours(m.view(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    s = np.array([(box[2] - box[0]) / (crop[2] - crop[0]), (box[3] - box[1]) / (crop[3] - crop[1])])
    o = np.array(box[:2]) - np.array(crop[:2]) * s + (s - 1) / 2
    return [np.round(c * s + o).astype(np.int32) for c in contours]


def render(
    image: np.ndarray,
    cam: np.ndarray,
    mask: np.ndarray | None,
    spec: InputSpec,
    *,
    label: str,
    scores: dict[str, float],
    width: int = 448,
    view: np.ndarray | None = None,
) -> np.ndarray:
    """An RGB uint8 overlay, `width` wide: a banner with the label and the scores above the
    whole frame at its own aspect, where the part the classifier saw carries the map as a
    heatmap (alpha by strength) and the mask's outline in white. With "center_crop" the frame
    outside the view is dimmed and the view framed by a thin grey line; with "stretch" and
    "letterbox" the view is the whole frame (a letterbox's padding left out). The body is at
    most twice as tall as it is wide (a frame taller than that is squashed to it).

    `view` is the classifier's view if the caller already has it (`resize_frame(image, spec)`,
    uint8 [H,W,3] RGB at spec.size), so it is not computed twice; `image` then gives only its
    shape and, for a centre crop, the pixels outside the view. `cam` and `mask` are maps of the
    view (any resolution).
    """
    if view is None:
        view = resize_frame(image, spec)
    elif view.shape != (*spec.size, 3) or view.dtype != np.uint8:
        raise ValueError(f"view must be uint8 {(*spec.size, 3)}, got {view.dtype} {view.shape}")
    vh, vw = view.shape[:2]
    heat = _heat(cam, (vw, vh))
    # view * (1 - alpha) + alpha * colour, in uint8 with two table look-ups
    blended = cv2.add(
        cv2.multiply(view, cv2.applyColorMap(heat, KEEP), scale=1 / 255),
        cv2.applyColorMap(heat, COLOUR),
    )
    ih, iw = image.shape[:2]
    h = min(max(1, round(ih * width / iw)), 2 * width)  # a freak 1:100 file: squashed, bounded
    crop, (fx0, fy0, fx1, fy1) = view_place((ih, iw), spec)
    x0, y0 = round(fx0 * width), round(fy0 * h)
    x1, y1 = max(x0 + 1, round(fx1 * width)), max(y0 + 1, round(fy1 * h))  # never empty
    out = np.empty((BANNER + h, width, 3), np.uint8)
    body = out[BANNER:]
    seen = blended[crop[1] : crop[3], crop[0] : crop[2]]
    if (x0, y0, x1, y1) == (0, 0, width, h):
        cv2.resize(seen, (width, h), dst=body, interpolation=cv2.INTER_LINEAR)
    else:  # the frame around the view, dimmed; bilinear: cheap, and it is only the context
        cv2.resize(image, (width, h), dst=body, interpolation=cv2.INTER_LINEAR)
        for part in (body[:y0], body[y1:], body[y0:y1, :x0], body[y0:y1, x1:]):
            np.right_shift(part, DIM_SHIFT, out=part)
        cv2.resize(seen, (x1 - x0, y1 - y0), dst=body[y0:y1, x0:x1], interpolation=cv2.INTER_LINEAR)
        cv2.rectangle(body, (x0 - 1, y0 - 1), (x1, y1), VIEW_LINE, 1)  # just outside the view
    if mask is not None:
        outline = _outline(mask, (vw, vh), crop, (x0, y0, x1, y1))
        cv2.drawContours(body, outline, -1, (255, 255, 255), 2)
    draw_banner(out[:BANNER], label, scores)
    return out


def draw_banner(banner: np.ndarray, label: str, scores: dict[str, float]) -> None:
    """The overlay's top band, in place: the label, and the scores below it."""
    banner[:] = 24
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(banner, label[:40], (8, 22), font, 0.65, (255, 255, 255), 2, cv2.LINE_AA)
    text = "  ".join(f"{k} {v:.2f}" for k, v in scores.items())
    cv2.putText(banner, text[:80], (8, 46), font, 0.5, (200, 220, 255), 1, cv2.LINE_AA)


def write_overlay(path: Path, overlay: np.ndarray) -> Path:
    """Write the overlay JPEG atomically next to the review frame."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    bgr = cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR)  # contiguous; a [..., ::-1] view is slow
    ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise OSError(f"could not encode the overlay for {path}")
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    except BaseException:  # a full disk: leave no half file behind
        tmp.unlink(missing_ok=True)
        raise
    return path
