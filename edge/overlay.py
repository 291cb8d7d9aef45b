"""The picture a person looks at for a review frame: what the model saw, where it looked, where
the animal is, and the scores, readable at a glance.

It is drawn for every review frame, so each step is a single OpenCV call on uint8 data: the
heat's colour and its alpha come from 256-entry tables indexed by the map's strength, the blend
is done at the model's size and upscaled once, the outline is traced at the model's size and its
points scaled, and the JPEG is encoded from a contiguous BGR copy (OpenCV copies a channel-
reversed numpy view slowly, which cost more than the encoding itself).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge.bundle import InputSpec
from edge.preprocess import resize_frame

BANNER = 56
HEAT_ALPHA = 0.6  # the heat's opacity where the map peaks; 0 where it is zero


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


def _outline(mask: np.ndarray, view_size: tuple[int, int], out_size: tuple[int, int]) -> list:
    """The mask's outer contours, traced at the view's size (smooth enough, 4x fewer pixels
    than the output) and scaled to the output, pixel centre to pixel centre."""
    vw, vh = view_size
    m = cv2.resize(np.asarray(mask, np.float32), (vw, vh), interpolation=cv2.INTER_LINEAR) > 0.5
    contours, _ = cv2.findContours(m.view(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    s = np.array([out_size[0] / vw, out_size[1] / vh])
    return [np.round(c * s + (s - 1) / 2).astype(np.int32) for c in contours]


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
    """An RGB uint8 overlay: the classifier's view of `image`, the map as a heatmap (alpha by
    strength), the mask's outline in white, and a banner with the label and the scores.

    `view` is that view if the caller already has it (`resize_frame(image, spec)`, uint8
    [H,W,3] RGB at spec.size), so it is not computed twice; `image` is then not read.
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
    h = round(vh * width / vw)
    out = np.empty((BANNER + h, width, 3), np.uint8)
    body = out[BANNER:]
    cv2.resize(blended, (width, h), dst=body, interpolation=cv2.INTER_LINEAR)
    if mask is not None:
        cv2.drawContours(body, _outline(mask, (vw, vh), (width, h)), -1, (255, 255, 255), 2)
    banner = out[:BANNER]
    banner[:] = 24
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(banner, label[:40], (8, 22), font, 0.65, (255, 255, 255), 2, cv2.LINE_AA)
    text = "  ".join(f"{k} {v:.2f}" for k, v in scores.items())
    cv2.putText(banner, text[:80], (8, 46), font, 0.5, (200, 220, 255), 1, cv2.LINE_AA)
    return out


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
