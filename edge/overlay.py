"""The picture a person looks at for a review frame: the whole frame, what part of it the model
saw, where it looked, where the animal is, and the scores, readable at a glance.

The frame is shown whole at its own aspect. The part the classifier saw carries the heat and the
mask's outline; with a centre crop the rest of the frame is dimmed and the view framed by a thin
line, so that an animal the model never looked at (at the edges of a 4:3 frame) is still seen.

The watcher does not draw it: on its decision path it keeps only what drawing needs
(`pack_overlay`: the map, a 64 px mask, the spec, label and scores; a few hundred bytes in the
journal), and the picture is drawn when someone asks (`ensure_overlay`, from the review page or
`edge overlays OUT`). Drawing stays cheap: each step is a single OpenCV call on uint8 data; the
heat's colour and its alpha come from 256-entry tables indexed by the map's strength, the blend
is done at the model's size and upscaled once into its place, the outline is traced at the
model's size and its points scaled, and the JPEG is encoded from a contiguous BGR copy (OpenCV
copies a channel-reversed numpy view slowly, which cost more than the encoding itself).
"""

from __future__ import annotations

import json
import logging
import math
import struct
import threading
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import cv2
import numpy as np
from pydantic import ValidationError

from edge.bundle import InputSpec
from edge.durable import is_disk_full
from edge.preprocess import CROP_RATIO, resize_frame

if TYPE_CHECKING:
    from edge.journal import Frame, Journal

log = logging.getLogger(__name__)

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


# What the watcher keeps of a review frame so that its overlay can be drawn later, when someone
# looks (the journal's `overlay_data`): MAGIC, a version byte, the JSON header's length (u32
# little-endian), the JSON header (spec, label, scores, array shapes), then one zlib stream of
# the map (float16, at its own resolution, divided by its peak: render only uses it relative to
# the peak) followed by the mask (uint8 0..255, at most MASK_SIDE on its long side). A few
# hundred bytes to a few KiB, and no zip container or pickle to trust on the way back.
MAGIC = b"EDGEOVL"
OVERLAY_VERSION = 1
MASK_SIDE = 64
_HEAD = struct.Struct("<7sBI")


class OverlayData(NamedTuple):
    """What `pack_overlay` stored, unpacked: enough for `render` given the frame."""

    cam: np.ndarray  # float32, the peak at 1 (or all 0)
    mask: np.ndarray | None  # float32 0..1, at most MASK_SIDE on its long side
    spec: InputSpec
    label: str
    scores: dict[str, float]


def _small_mask(mask: np.ndarray) -> np.ndarray:
    """The mask as uint8 0..255, area-averaged down to at most MASK_SIDE on its long side (a
    soft edge keeps where the boundary lay between the small mask's pixels)."""
    m = np.asarray(mask, np.float32)
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"mask must be a 2-D map, got shape {m.shape}")
    h, w = m.shape
    scale = MASK_SIDE / max(h, w)
    if scale < 1:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        m = cv2.resize(m, size, interpolation=cv2.INTER_AREA)
    return cv2.convertScaleAbs(m, alpha=255.0)  # rounds and saturates to 0..255


def pack_overlay(
    cam: np.ndarray,
    mask: np.ndarray | None,
    spec: InputSpec,
    *,
    label: str,
    scores: dict[str, float],
) -> bytes:
    """What drawing a review frame's overlay needs, as bytes for the journal: cheap, because it
    runs on the decision path for every review frame (the picture itself is drawn when someone
    asks: `draw_overlay`, `ensure_overlay`). `cam`: the classifier's map of its view, any
    resolution; `mask`: a float or bool map of the view, or None."""
    c = np.maximum(np.nan_to_num(np.asarray(cam, np.float32)), 0)
    if c.ndim != 2 or c.size == 0:
        raise ValueError(f"cam must be a 2-D map, got shape {c.shape}")
    peak = float(c.max())
    c16 = (c / peak if peak > 0 else c).astype("<f2")
    m8 = None if mask is None else _small_mask(mask)
    header = json.dumps(
        {
            "spec": spec.model_dump(mode="json"),
            "label": str(label),
            "scores": {str(k): float(v) for k, v in scores.items()},
            "cam": list(c16.shape),
            "mask": None if m8 is None else list(m8.shape),
        },
        separators=(",", ":"),
    ).encode()
    body = c16.tobytes() + (b"" if m8 is None else m8.tobytes())
    return _HEAD.pack(MAGIC, OVERLAY_VERSION, len(header)) + header + zlib.compress(body, 1)


def unpack_overlay(data: bytes) -> OverlayData:
    """`pack_overlay`'s bytes back; ValueError, saying what is wrong, for anything else."""
    data = bytes(data)
    if len(data) < _HEAD.size:
        raise ValueError(f"overlay data too short ({len(data)} bytes)")
    magic, version, n = _HEAD.unpack_from(data)
    if magic != MAGIC:
        raise ValueError("not overlay data (wrong magic)")
    if version != OVERLAY_VERSION:
        raise ValueError(
            f"overlay data version {version} is not known "
            f"(this build reads version {OVERLAY_VERSION})"
        )
    try:
        head = json.loads(data[_HEAD.size : _HEAD.size + n])
        body = zlib.decompress(data[_HEAD.size + n :])
        ch, cw = (int(v) for v in head["cam"])
        ms = head["mask"]
        mh, mw = (int(v) for v in ms) if ms is not None else (0, 0)
        if min(ch, cw) < 1 or (ms is not None and min(mh, mw) < 1):
            raise ValueError(f"empty map or mask: {head['cam']}, {ms}")
        if len(body) != 2 * ch * cw + mh * mw:
            raise ValueError(f"{len(body)} bytes of arrays for map {ch}x{cw}, mask {ms}")
        cam = np.frombuffer(body, "<f2", ch * cw).reshape(ch, cw).astype(np.float32)
        mask = None
        if ms is not None:
            raw = np.frombuffer(body, np.uint8, mh * mw, offset=2 * ch * cw)
            mask = raw.reshape(mh, mw).astype(np.float32) * np.float32(1 / 255)
        spec = InputSpec.model_validate(head["spec"])
        scores = {str(k): float(v) for k, v in head["scores"].items()}
        return OverlayData(cam, mask, spec, str(head["label"]), scores)
    except ValidationError as e:
        n = e.error_count()
        raise ValueError(f"corrupt overlay data: bad input spec ({n} errors)") from None
    except (ValueError, TypeError, KeyError, AttributeError, zlib.error) as e:
        raise ValueError(f"corrupt overlay data: {e}") from None


def draw_overlay(image: np.ndarray, data: bytes, *, width: int = 448) -> np.ndarray:
    """The review overlay of `image` (the frame, decoded) from `pack_overlay`'s bytes: `render`
    with the stored map, mask, label and scores; the view is recomputed from the frame."""
    d = unpack_overlay(data)
    return render(image, d.cam, d.mask, d.spec, label=d.label, scores=d.scores, width=width)


OVERLAYS = "overlays"  # under OUT; the same folder as edge.review.queue.OVERLAYS
_drawing = threading.Lock()  # the page's worker threads: one frame drawn once, not twice


def overlay_relpath(frame: Frame) -> str:
    """Where a frame's overlay is drawn, relative to OUT."""
    return f"{OVERLAYS}/{frame.relpath}.overmap.jpg"


def _writable_inside(out: Path, target: Path) -> bool:
    """Whether writing `target` stays inside OUT/overlays: its nearest existing folder, links
    followed, is OUT/overlays or under it (or OUT itself, before OUT/overlays exists)."""
    root = out.resolve()
    folder = target.parent
    while not folder.exists() and folder != out:
        folder = folder.parent
    real = folder.resolve()
    return real == root or real.is_relative_to(root / OVERLAYS)


def ensure_overlay(journal: Journal, out: Path, frame: Frame) -> Path | None:
    """The frame's overlay as a file under OUT/overlays, drawn now from its journal data if it
    was not drawn before (and the journal told where). None when there is nothing to draw it
    from (no data, the frame's file gone or undecodable, corrupt data) or no room to write it:
    the caller shows something plainer; a full disk is logged, never raised."""
    from edge.decode import DecodeError, decode_frame
    from edge.journal import DiskFullError
    from edge.paths import resolve_inside

    def drawn(f: Frame) -> Path | None:
        return resolve_inside(out, f.overlay, under=(OVERLAYS,)) if f.overlay else None

    if (real := drawn(frame)) is not None:
        return real
    if not frame.has_overlay_data or not frame.dest:
        return None
    rel = overlay_relpath(frame)
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts) or "\\" in rel or "\x00" in rel:
        return None  # a relpath the watcher never writes; nothing leaves OUT/overlays
    with _drawing:
        current = journal.get(frame.id)
        if current is None:
            return None
        if (real := drawn(current)) is not None:  # drawn meanwhile by another request
            return real
        data = journal.overlay_data(frame.id)
        src = resolve_inside(out, current.dest) if current.dest else None
        if data is None or src is None:
            return None
        try:
            d = unpack_overlay(data)
            image = decode_frame(src, min_side=math.ceil(max(d.spec.size) / CROP_RATIO)).image
            picture = render(image, d.cam, d.mask, d.spec, label=d.label, scores=d.scores)
        except (DecodeError, ValueError) as e:
            log.warning("overlay of %s not drawn: %s", frame.relpath, e)
            return None
        target = out / rel
        if not _writable_inside(out, target):
            return None
        try:
            write_overlay(target, picture)
        except OSError as e:
            full = is_disk_full(e)
            log.warning(
                "overlay of %s not written%s: %s",
                frame.relpath,
                " (no space left)" if full else "",
                e,
            )
            return None
        real = resolve_inside(out, rel, under=(OVERLAYS,))
        if real is None:  # OUT/overlays is a link out of OUT, or the file went at once
            target.unlink(missing_ok=True)
            return None
        try:
            journal.set_overlay(frame.id, rel)
        except DiskFullError as e:  # drawn and served; the journal learns it another time
            log.warning("overlay of %s drawn, not journaled: %s", frame.relpath, e)
        return real
