"""The picture shown for a review frame when the watcher wrote no overlay (overlays off, or
removed since): the frame with edge.overlay's banner, drawn from what the journal stores.
The map and the mask are not journaled, so this picture has the scores but not the heat."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge.decode import load_image
from edge.overlay import BANNER, draw_banner

WIDTH = 448


def banner_picture(
    frame: Path, label: str, scores: dict[str, float], *, width: int = WIDTH
) -> bytes:
    """JPEG bytes: the banner (label, scores) above the frame, `width` wide."""
    image = load_image(frame, min_side=width // 2)
    ih, iw = image.shape[:2]
    h = min(max(1, round(ih * width / iw)), 2 * width)
    out = np.empty((BANNER + h, width, 3), np.uint8)
    cv2.resize(image, (width, h), dst=out[BANNER:], interpolation=cv2.INTER_AREA)
    draw_banner(out[:BANNER], label, scores)
    ok, data = cv2.imencode(
        ".jpg", cv2.cvtColor(out, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85]
    )
    if not ok:
        raise OSError(f"could not encode a picture of {frame}")
    return data.tobytes()
