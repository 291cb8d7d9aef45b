"""Decode a frame from disk into an RGB uint8 array, or say clearly why it cannot be.

OpenCV applies the EXIF orientation on read. Greyscale (night infrared) frames come back as
three equal channels, alpha is dropped, 16-bit images are scaled to 8 bits. A frame larger than
`max_pixels` is refused before it is decoded (a decompression bomb would exhaust memory).

A JPEG without its end-of-image marker is refused as truncated (:class:`TruncatedError`), even
though OpenCV would decode it with the missing rows grey: a half-written frame would otherwise be
classified as whatever the grey looks like. The caller may wait and retry such a frame.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import PIL.Image

MAX_PIXELS = 100_000_000  # 100 MP: beyond any camera trap, well under a bomb


class DecodeError(Exception):
    """A frame that cannot be read; the message is the reason recorded in quarantine."""


class TruncatedError(DecodeError):
    """A JPEG cut short (no end-of-image marker): maybe still being written, worth a retry."""


def jpeg_truncated(data: np.ndarray | bytes) -> bool:
    """True for JPEG bytes (SOI FF D8) that do not end with EOI (FF D9).

    Trailing padding of zeros or 0xFF (up to 4 KiB, some cameras write it) is allowed. Inside
    entropy-coded data FF is always stuffed (FF 00), so a cut ends in FF D9 only at a marker.
    """
    raw = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
    if raw[:2] != b"\xff\xd8":
        return False
    return not raw[-4096:].rstrip(b"\x00\xff").endswith(b"\xff\xd9")


def image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the file header without decoding pixels; None if not an image."""
    try:
        with PIL.Image.open(path) as im:
            return im.size
    except (OSError, ValueError, PIL.Image.DecompressionBombError):
        return None


_REDUCED = {
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}


def _reduction(size: tuple[int, int] | None, min_side: int | None, jpeg: bool) -> int:
    """The largest JPEG DCT scale (1, 2, 4, 8) that keeps the short side >= min_side."""
    if not (jpeg and min_side and size):
        return 1
    short = min(size)
    return max((r for r in (1, 2, 4, 8) if short // r >= min_side), default=1)


class Decoded(NamedTuple):
    """A decoded frame and the size of the original (EXIF orientation applied), which a
    reduced decode does not have: the results file reports the frame, not our copy of it."""

    image: np.ndarray
    width: int
    height: int


def load_image(
    path: str | Path, *, max_pixels: int = MAX_PIXELS, min_side: int | None = None
) -> np.ndarray:
    """Read `path` as an RGB uint8 array [H,W,3], EXIF orientation applied.

    IMREAD_COLOR does the normalising in one call: EXIF rotation, grey to three channels,
    alpha dropped, 16 bits scaled to 8. `min_side`: a JPEG may be decoded at 1/2, 1/4 or 1/8
    scale (in the DCT, several times faster) as long as its short side stays >= min_side; a
    model that looks at 224 pixels gains nothing from decoding a 12-megapixel frame in full.
    """
    return decode_frame(path, max_pixels=max_pixels, min_side=min_side).image


def _full_size(image: np.ndarray, size: tuple[int, int] | None, r: int) -> tuple[int, int]:
    """(width, height) of the frame before a 1/r decode, as displayed (EXIF orientation)."""
    h, w = image.shape[:2]
    if size is None or r == 1:
        return w, h
    sw, sh = size  # from the header, before the orientation was applied
    # libjpeg rounds a scaled size up; a quarter turn shows as width and height swapped
    return (sw, sh) if (h, w) == (-(-sh // r), -(-sw // r)) else (sh, sw)


def decode_frame(
    path: str | Path, *, max_pixels: int = MAX_PIXELS, min_side: int | None = None
) -> Decoded:
    """:func:`load_image`, with the original frame's width and height."""
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise DecodeError(f"cannot read: {e.strerror or e}") from e
    if data.size == 0:
        raise DecodeError("empty file (0 bytes)")
    try:  # the header alone: a bomb is refused before a byte of pixels is allocated
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)  # ours below
            with PIL.Image.open(io.BytesIO(data)) as im:
                size: tuple[int, int] | None = im.size
    except PIL.Image.DecompressionBombError as e:  # over Pillow's own limit (~179 MP)
        raise DecodeError(f"decompression bomb refused ({e})") from e
    except (OSError, ValueError):
        size = None  # not a format Pillow knows; OpenCV may still, under its own pixel limit
    if size is not None and size[0] * size[1] > max_pixels:
        raise DecodeError(f"{size[0]}x{size[1]} pixels is over the limit of {max_pixels}")
    if jpeg_truncated(data):
        raise TruncatedError("truncated JPEG (no end-of-image marker)")
    r = _reduction(size, min_side, data[:2].tobytes() == b"\xff\xd8")
    image = cv2.imdecode(data, _REDUCED[r] if r > 1 else cv2.IMREAD_COLOR)
    if image is None:
        raise DecodeError("not a decodable image (corrupt, truncated or not an image)")
    return Decoded(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), *_full_size(image, size, r))


def is_greyscale(image: np.ndarray, tol: int = 6) -> bool:
    """True for infrared night frames: the three channels (nearly) equal everywhere."""
    small = image[::8, ::8].astype(np.int16)
    return bool(
        np.abs(small[..., 0] - small[..., 1]).mean() < tol
        and np.abs(small[..., 1] - small[..., 2]).mean() < tol
    )
