"""Decode a frame from disk into an RGB uint8 array, or say clearly why it cannot be.

OpenCV applies the EXIF orientation on read. Greyscale (night infrared) frames come back as
three equal channels, alpha is dropped, 16-bit images are scaled to 8 bits. A frame larger than
`max_pixels` is refused before it is decoded (a decompression bomb would exhaust memory).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import PIL.Image

MAX_PIXELS = 100_000_000  # 100 MP: beyond any camera trap, well under a bomb


class DecodeError(Exception):
    """A frame that cannot be read; the message is the reason recorded in quarantine."""


def image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the file header without decoding pixels; None if not an image."""
    try:
        with PIL.Image.open(path) as im:
            return im.size
    except (OSError, ValueError, PIL.Image.DecompressionBombError):
        return None


def load_image(path: str | Path, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read `path` as an RGB uint8 array [H,W,3], EXIF orientation applied.

    IMREAD_COLOR does the normalising in one call: EXIF rotation, grey to three channels,
    alpha dropped, 16 bits scaled to 8.
    """
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise DecodeError(f"cannot read: {e.strerror or e}") from e
    if data.size == 0:
        raise DecodeError("empty file (0 bytes)")
    size = image_size(path)
    if size is not None and size[0] * size[1] > max_pixels:
        raise DecodeError(f"{size[0]}x{size[1]} pixels is over the limit of {max_pixels}")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise DecodeError("not a decodable image (corrupt, truncated or not an image)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def is_greyscale(image: np.ndarray, tol: int = 6) -> bool:
    """True for infrared night frames: the three channels (nearly) equal everywhere."""
    small = image[::8, ::8].astype(np.int16)
    return bool(
        np.abs(small[..., 0] - small[..., 1]).mean() < tol
        and np.abs(small[..., 1] - small[..., 2]).mean() < tol
    )
