"""Turn decoded RGB frames into the float32 NCHW batch a bundle's model expects.

One implementation for the device and for export-time calibration and validation, so that the
figures written into a bundle describe exactly what the device will compute.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from edge.bundle import InputSpec

CROP_RATIO = 0.875  # centre crop: short side to size / 0.875, as ImageNet models are evaluated


def resize_frame(image: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Bring one RGB uint8 frame to spec.size (H, W) as uint8, following spec.resize."""
    h, w = spec.size
    ih, iw = image.shape[:2]
    if spec.resize == "stretch":
        return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    if spec.resize == "center_crop":
        scale = max(h, w) / CROP_RATIO / min(ih, iw)
        rh, rw = max(h, round(ih * scale)), max(w, round(iw * scale))
        resized = cv2.resize(image, (rw, rh), interpolation=cv2.INTER_AREA)
        y, x = (rh - h) // 2, (rw - w) // 2
        return resized[y : y + h, x : x + w]
    # letterbox: keep the aspect, pad with the mean colour
    scale = min(h / ih, w / iw)
    rh, rw = max(1, round(ih * scale)), max(1, round(iw * scale))
    resized = cv2.resize(image, (rw, rh), interpolation=cv2.INTER_AREA)
    out = np.empty((h, w, 3), np.uint8)
    out[:] = np.clip(np.asarray(spec.mean), 0, 255).astype(np.uint8)
    y, x = (h - rh) // 2, (w - rw) // 2
    out[y : y + rh, x : x + rw] = resized
    return out


def normalise(frames: np.ndarray, spec: InputSpec) -> np.ndarray:
    """uint8 [N,H,W,3] RGB -> float32 [N,3,H,W], colour order and (x - mean) / std applied.

    One channel plane at a time, written in place: faster than converting the
    whole batch, subtracting, dividing and transposing, with the same float32 results.
    """
    n, h, w, _ = frames.shape
    out = np.empty((n, 3, h, w), np.float32)
    mean = np.asarray(spec.mean, np.float32)
    std = np.asarray(spec.std, np.float32)
    sources = (2, 1, 0) if spec.color_order == "BGR" else (0, 1, 2)
    for c, src in enumerate(sources):
        np.subtract(frames[..., src], mean[c], out=out[:, c], dtype=np.float32)
        np.divide(out[:, c], std[c], out=out[:, c])
    return out


def prepare(images: Sequence[np.ndarray], spec: InputSpec) -> np.ndarray:
    """Decoded RGB uint8 frames of any sizes -> one model-ready batch."""
    if not images:
        raise ValueError("prepare() needs at least one image")
    return normalise(np.stack([resize_frame(im, spec) for im in images]), spec)


def view_of(mask: np.ndarray, image_hw: tuple[int, int], spec: InputSpec) -> np.ndarray:
    """Map a full-frame mask [h,w] (any resolution, normalised coordinates) into the model's
    view of a frame of `image_hw`, as `resize_frame` does to the frame itself: the same crop,
    stretch or letterbox, so the mask lines up with the classifier's map."""
    h, w = spec.size
    ih, iw = image_hw
    mh, mw = mask.shape[:2]
    m = mask.astype(np.float32)
    if spec.resize == "stretch":
        return cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)
    if spec.resize == "center_crop":
        scale = max(h, w) / CROP_RATIO / min(ih, iw)
        rh, rw = max(h, round(ih * scale)), max(w, round(iw * scale))
        y, x = (rh - h) // 2, (rw - w) // 2
        y0, y1 = round(y / rh * mh), max(round((y + h) / rh * mh), round(y / rh * mh) + 1)
        x0, x1 = round(x / rw * mw), max(round((x + w) / rw * mw), round(x / rw * mw) + 1)
        return cv2.resize(m[y0:y1, x0:x1], (w, h), interpolation=cv2.INTER_LINEAR)
    scale = min(h / ih, w / iw)
    rh, rw = max(1, round(ih * scale)), max(1, round(iw * scale))
    out = np.zeros((h, w), np.float32)
    y, x = (h - rh) // 2, (w - rw) // 2
    out[y : y + rh, x : x + rw] = cv2.resize(m, (rw, rh), interpolation=cv2.INTER_LINEAR)
    return out
