"""The picture a person looks at for a review frame: what the model saw, where it looked, where
the animal is, and the scores, readable at a glance."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge.bundle import InputSpec
from edge.preprocess import resize_frame

BANNER = 56


def render(
    image: np.ndarray,
    cam: np.ndarray,
    mask: np.ndarray | None,
    spec: InputSpec,
    *,
    label: str,
    scores: dict[str, float],
    width: int = 448,
) -> np.ndarray:
    """An RGB uint8 overlay: the classifier's view of `image`, the map as a heatmap (alpha by
    strength), the mask's outline in white, and a banner with the label and the scores."""
    view = resize_frame(image, spec)  # what the model saw; blend there, upscale once
    vh, vw = view.shape[:2]
    heat = cv2.resize(np.nan_to_num(cam.astype(np.float32)), (vw, vh), cv2.INTER_LINEAR)
    peak = float(heat.max())
    heat = heat / peak if peak > 0 else heat
    colour = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    alpha = (heat * np.float32(0.6))[..., None]
    blended = (view + alpha * (colour.astype(np.float32) - view)).astype(np.uint8)
    h = round(vh * width / vw)
    out = cv2.resize(blended, (width, h), interpolation=cv2.INTER_LINEAR)
    if mask is not None:
        m = cv2.resize(mask.astype(np.float32), (width, h), interpolation=cv2.INTER_LINEAR) > 0.5
        contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, (255, 255, 255), 2)
    banner = np.full((BANNER, width, 3), 24, np.uint8)
    cv2.putText(banner, label[:40], (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.65, (255, 255, 255), 2,
                cv2.LINE_AA)
    text = "  ".join(f"{k} {v:.2f}" for k, v in scores.items())
    cv2.putText(banner, text[:80], (8, 46), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (200, 220, 255), 1,
                cv2.LINE_AA)
    return np.vstack([banner, out])


def write_overlay(path: Path, overlay: np.ndarray) -> Path:
    """Write the overlay JPEG atomically next to the review frame."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    ok, data = cv2.imencode(".jpg", overlay[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise OSError(f"could not encode the overlay for {path}")
    tmp.write_bytes(data.tobytes())
    tmp.replace(path)
    return path
