"""Animal masks from sources other than the segmenter: boxes, detector output, mask files.

A box is a coarse mask, but where MegaDetector already ran (or a person drew boxes), it says
where the animal is, and Over-MAP against it is still informative. Ground-truth masks (the
Oxford-IIIT Pet trimaps) measure the measures themselves.

Boxes are normalised ``[x, y, w, h]`` with a top-left origin, as MegaDetector writes them:
x and w along the width (columns), y and h along the height (rows).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np


def _check_box(box: Sequence[float]) -> tuple[float, float, float, float]:
    if len(box) != 4:
        raise ValueError(f"a box is [x, y, w, h] (4 numbers), got {list(box)!r}")
    x, y, w, h = (float(v) for v in box)
    if not all(np.isfinite([x, y, w, h])):
        raise ValueError(f"box has NaN/inf: {list(box)!r}")
    if w < 0 or h < 0:
        raise ValueError(f"box width and height must be >= 0, got {list(box)!r}")
    if max(abs(x), abs(y), w, h) > 1.5:
        raise ValueError(
            f"box {list(box)!r} is not normalised; divide pixel boxes by the image width/height"
        )
    return x, y, w, h


def mask_from_boxes(
    boxes: Iterable[Sequence[float]],
    shape: tuple[int, int],
    *,
    soft: bool = False,
    touch: bool = False,
) -> np.ndarray:
    """Rasterise normalised ``[x, y, w, h]`` boxes into a float32 mask of ``shape`` = (H, W).

    Hard boxes (default): 1 inside any box, 0 outside; boxes are clipped to the frame. A pixel
    is inside when its centre is, or with ``touch=True`` when any part of it is (what a
    coverage count on a finer grid wants: a box never vanishes between pixel centres).
    Soft boxes (``soft=True``): an animal rarely fills its box, so each box becomes a separable
    Gaussian bump (sigma = a quarter of the box size, peak 1 at the box centre, truncated to
    the box); overlapping boxes take the max.

    No boxes gives an all-zero mask (no animal).
    """
    H, W = int(shape[0]), int(shape[1])
    if H <= 0 or W <= 0:
        raise ValueError(f"shape must be positive (H, W), got {shape}")
    out = np.zeros((H, W), np.float32)
    ys = (np.arange(H) + 0.5) / H  # pixel centres, normalised
    xs = (np.arange(W) + 0.5) / W
    cols, rows = np.arange(W), np.arange(H)
    for box in boxes:
        x, y, w, h = _check_box(box)
        if touch:  # pixel i spans [i, i+1) in pixel units and overlaps [x*W, (x+w)*W)
            inx = (cols + 1 > x * W) & (cols < (x + w) * W)
            iny = (rows + 1 > y * H) & (rows < (y + h) * H)
        else:
            inx = (xs >= x) & (xs < x + w)
            iny = (ys >= y) & (ys < y + h)
        if soft:
            gx = np.exp(-0.5 * ((xs - (x + w / 2)) / max(w / 4, 1e-6)) ** 2) * inx
            gy = np.exp(-0.5 * ((ys - (y + h / 2)) / max(h / 4, 1e-6)) ** 2) * iny
            np.maximum(out, np.outer(gy, gx).astype(np.float32), out=out)
        else:
            out[np.ix_(iny, inx)] = 1.0
    return out


def boxes_from_labels_bbox(text: str | None) -> list[list[float]]:
    """Parse the labels.csv ``bbox`` column: ``"x,y,w,h;x,y,w,h"`` -> ``[[x, y, w, h], ...]``.

    An empty cell (or None) means no box and gives ``[]``.
    """
    if text is None or not str(text).strip():
        return []
    boxes = []
    for part in str(text).split(";"):
        part = part.strip()
        if not part:
            continue
        try:
            box = [float(v) for v in part.split(",")]
        except ValueError:
            raise ValueError(f"bbox {part!r} is not 'x,y,w,h' numbers") from None
        boxes.append(list(_check_box(box)))
    return boxes


def read_megadetector(
    json_path: str | Path, *, min_conf: float = 0.0, categories: Iterable[str] | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Read a MegaDetector batch output file (format 1.x) as ``{file: [detection, ...]}``.

    Each detection is the file's own dict: ``category`` (a key of ``detection_categories``,
    "1" = animal, "2" = person, "3" = vehicle), ``conf`` and ``bbox`` (normalised x, y, w, h).
    A ``category_name`` is added from ``detection_categories`` when the file has it.
    Images that failed in MegaDetector (``failure`` set, no ``detections``) map to ``[]``.

    Args:
        min_conf: keep detections with ``conf >= min_conf``.
        categories: keep only these category ids or names (e.g. ``{"animal"}``); all by default.
    """
    path = Path(json_path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read MegaDetector output {path}: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"{path} is not MegaDetector batch output (no 'images' list)")
    names = {str(k): str(v) for k, v in (data.get("detection_categories") or {}).items()}
    wanted = None if categories is None else {str(c) for c in categories}
    out: dict[str, list[dict[str, Any]]] = {}
    for im in data["images"]:
        if "file" not in im:
            raise ValueError(f"{path}: an image entry has no 'file': {im!r}")
        dets = []
        for d in im.get("detections") or []:
            d = dict(d)
            cat = str(d.get("category"))
            if cat in names:
                d["category_name"] = names[cat]
            if float(d.get("conf", 0.0)) < min_conf:
                continue
            if wanted is not None and cat not in wanted and d.get("category_name") not in wanted:
                continue
            dets.append(d)
        out[str(im["file"])] = dets
    return out


def mask_from_file(
    path: str | Path,
    *,
    positive_values: Sequence[int] = (1,),
    ignore_values: Sequence[int] = (3,),
    shape: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Read a label mask PNG as (mask, valid), both float32 [H, W] in {0, 1}.

    For the Oxford-IIIT Pet trimaps (1 = pet, 2 = background, 3 = boundary) the defaults give
    mask = 1 on the pet, and valid = 0 on the unsure boundary so a measure can leave it out
    (multiply both the map and the mask by ``valid``). Values are read unchanged
    (``IMREAD_UNCHANGED``, first channel if several). ``shape`` = (H, W) resizes with nearest
    neighbour, which keeps label values intact.
    """
    p = Path(path)
    data = np.fromfile(p, dtype=np.uint8) if p.is_file() else None
    labels = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data is not None and data.size else None
    if labels is None:
        raise ValueError(f"cannot read mask file {p} (missing or not an image)")
    if labels.ndim == 3:
        labels = labels[..., 0]
    if shape is not None:
        labels = cv2.resize(labels, (int(shape[1]), int(shape[0])), interpolation=cv2.INTER_NEAREST)
    mask = np.isin(labels, list(positive_values)).astype(np.float32)
    valid = (~np.isin(labels, list(ignore_values))).astype(np.float32)
    return mask, valid
