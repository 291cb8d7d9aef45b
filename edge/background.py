"""A per-camera background model: a camera trap is fixed, so the animal is what differs.

The model is built from the camera's own earlier frames. Camera-trap frames are not video:
minutes or days pass between triggers, and day, dusk and night follow one another, so a
running median of the last N frames mixes scenes that do not look alike. Instead, the model
keeps up to ``max_frames`` past frames (at a small working size, 128x128 by default) and, for
each new frame, builds its background from the ``neighbours`` past frames that look most like
it as a whole (nearest neighbours on a 16x16 thumbnail):

    B(p)     = median_k g_k * F_k(p)                      the background, per pixel and channel
    sigma(p) = 1.4826 * max_channel median_k |g_k F_k(p) - B(p)|   how much p varies by itself
    z(p)     = max_channel |F(p) - B(p)| / max(sigma(p), noise_floor)
    fg(p)    = clip((z(p) - z_low) / (z_high - z_low), 0, 1)

with ``g_k`` a per-channel gain, the median over pixels (every 4th row and column) of
(F + 1) / (F_k + 1), that brings neighbour k to the new frame's light (slow light changes)
whatever the animal does to the frame's mean, and a 3x3 opening to drop isolated pixels.
Pixels that move by themselves (leaves, water, shadows) have a large ``sigma`` and are not
called animal. An animal that stays a few frames (a burst) is outvoted by the median as long as
it sits on a pixel in fewer than half of the neighbours; frames the classifier already calls
animal can be kept out of the model altogether (``update(image, has_animal=True)`` stores
nothing).

Day colour and night infrared frames live in two separate memories, chosen by
``edge.decode.is_greyscale``. A memory with fewer than ``min_frames`` frames is not ready and
``foreground()`` returns None: the caller falls back to the segmenter alone.

Call ``foreground(image)`` before ``update(image)``: a frame is not its own background.

Memory: a past frame is kept as it was shrunk, uint8 (53 KB at 128x128 with its thumbnail,
a quarter of the blurred float32 frame), and the few neighbours chosen for a new frame are
blurred again: the same float32 values, exactly (sums of 1/16ths of whole grey levels).
``CameraBackgrounds`` keeps all the cameras' models together within a byte budget.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from edge.decode import is_greyscale

Mode = Literal["colour", "ir"]
Combine = Literal["geometric", "mean", "max", "min", "product"]

log = logging.getLogger(__name__)

_DESC = 16  # thumbnail side for choosing neighbours
_BLUR = np.array([0.25, 0.5, 0.25], np.float32)  # cv2.GaussianBlur's 3x3 kernel (sigma 0)
DEFAULT_MAX_BYTES = 128 * 2**20  # CameraBackgrounds' budget, see its docstring


def image_mode(image: np.ndarray) -> Mode:
    """ "ir" for a greyscale (night infrared) frame, "colour" otherwise."""
    return "ir" if is_greyscale(image) else "colour"


def _check_image(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] != 3 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"expected an RGB image [H,W,3] (or grey [H,W]), got shape {a.shape}")
    if a.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels (edge.decode.load_image), got {a.dtype}")
    return a


def _median0(a: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Median over the first axis of a few frames, into ``out`` (a new array by default;
    never a view of ``a``, which is only read).

    For up to 15 frames an odd-even transposition network of whole-frame min/max beats
    np.sort, which sorts each pixel's k values one by one. Min and max pick values without
    rounding, so the values are np.median's, bit for bit.
    """
    k = len(a)
    if k > 15:
        s = list(np.sort(a, axis=0))
    else:
        s = list(a)
        for p in range(k):
            for i in range(p % 2, k - 1, 2):
                lo = np.minimum(s[i], s[i + 1])
                s[i + 1] = np.maximum(s[i], s[i + 1])
                s[i] = lo
    if out is None:
        out = np.empty(a.shape[1:], a.dtype)
    if k % 2:
        np.copyto(out, s[k // 2])
    else:
        np.divide(np.add(s[k // 2 - 1], s[k // 2], out=out), 2, out=out)
    return out


def _median_last(a: np.ndarray) -> np.ndarray:
    """np.median over the last axis, with one single-kth partition (SIMD in numpy 2) instead
    of np.median's two-kth one, several times slower. Same values: for an even count the
    lower middle is the largest value left of the upper one."""
    n = a.shape[-1]
    p = np.partition(a, n // 2, axis=-1)
    if n % 2:
        return p[..., n // 2]
    return (p[..., : n // 2].max(axis=-1) + p[..., n // 2]) / 2


_scratch = threading.local()


def _scratch_array(name: str, shape: tuple[int, ...], dtype: type = np.float32) -> np.ndarray:
    """An array kept from call to call (one per name and thread, shared by all models): a
    fresh one would cost a page fault per 4 KB every frame."""
    arrays = _scratch.__dict__.setdefault("arrays", {})
    a = arrays.get(name)
    if a is None or a.shape != shape or a.dtype != dtype:
        a = arrays[name] = np.empty(shape, dtype)
    return a


@dataclass
class _Entry:
    planes: np.ndarray  # uint8 [3,S+2,S]: the frame at working size, one plane per channel,
    # with one reflected row above and below (cv2's BORDER_REFLECT_101), what the memory keeps
    desc: np.ndarray  # float32 [16*16*3], thumbnail grey levels minus 128 (exact products)
    norm: float  # desc @ desc


def _blur(planes: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """cv2.GaussianBlur 3x3 of padded uint8 planes [..., S+2, S] (a frame's own, or several
    frames' stacked), as float32 [..., S+2, S]: rows 1..S are each plane's blur, the same
    values (exact: sums of 1/16ths of whole numbers), and the pad rows are left over."""
    flat = cv2.sepFilter2D(
        planes.reshape(-1, planes.shape[-1]),
        cv2.CV_32F,
        _BLUR,
        _BLUR,
        dst=None if out is None else out.reshape(-1, planes.shape[-1]),
    )
    return flat.reshape(planes.shape)


class _Memory:
    """Up to ``capacity`` frames in a ring (uint8 channel planes, see ``_Entry``), their
    descriptors in one matrix, so finding the nearest ones is one matrix-vector product per
    frame. The matrix grows as frames come (x2, up to capacity), so that ``nbytes``, the size
    of the arrays, is what the memory holds."""

    _FIRST = 16  # descriptor rows allocated at first

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.planes: list[np.ndarray] = []
        self.descs = np.empty((0, _DESC * _DESC * 3), np.float32)
        self.norms = np.empty(0, np.float64)
        self.next = 0  # ring slot the next entry goes to (the oldest once full)
        self._planes_nbytes = 0

    def __len__(self) -> int:
        return len(self.planes)

    @property
    def nbytes(self) -> int:
        return self._planes_nbytes + self.descs.nbytes + self.norms.nbytes

    def add(self, entry: _Entry) -> None:
        i = self.next
        if i == len(self.norms):  # not full yet, and no room left: grow the matrix
            rows = min(self.capacity, max(self._FIRST, 2 * i))
            descs, norms = np.empty((rows, self.descs.shape[1]), np.float32), np.empty(rows)
            descs[:i], norms[:i] = self.descs, self.norms
            self.descs, self.norms = descs, norms
        if len(self.planes) < self.capacity:
            self.planes.append(entry.planes)
        else:
            self._planes_nbytes -= self.planes[i].nbytes
            self.planes[i] = entry.planes
        self._planes_nbytes += entry.planes.nbytes
        self.descs[i] = entry.desc
        self.norms[i] = entry.norm
        self.next = (i + 1) % self.capacity

    def oldest_first(self) -> np.ndarray:
        """Ring slots from the oldest entry to the newest."""
        n = len(self.planes)
        return (self.next - n + np.arange(n)) % self.capacity


class BackgroundModel:
    """Background of one fixed camera, learnt from its own frames (see the module docstring).

    Args:
        size: working size (H, W); frames are shrunk to it (INTER_AREA) before anything else.
        max_frames: past frames kept per mode (memory: about (H+2)*W*3 + 3,000 bytes each,
            53 KB at 128x128, as uint8 planes: the blur is redone on the few frames chosen).
        neighbours: how many of the most similar past frames make the background. 5 separated
            empty from animal frames best on a 1,300-frame stream (MLWIC CA-01; 9 and 15 did
            worse); more give a steadier sigma while the memory is still small.
        min_frames: frames a mode needs before ``foreground()`` answers.
        z_low, z_high: the soft threshold on the robust z-score (0 below, 1 above).
        noise_floor: smallest sigma in grey levels, so a very still pixel is not hypersensitive.

    Example:
        >>> bg = BackgroundModel()
        >>> for frame in earlier_frames:          # doctest: +SKIP
        ...     bg.update(frame)
        >>> fg = bg.foreground(new_frame)  # [128,128] in 0..1, or None   # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        size: tuple[int, int] = (128, 128),
        max_frames: int = 200,
        neighbours: int = 5,
        min_frames: int = 10,
        z_low: float = 3.0,
        z_high: float = 6.0,
        noise_floor: float = 6.0,
    ) -> None:
        if min(size) < 8:
            raise ValueError(f"size must be at least 8x8, got {size}")
        if neighbours < 1 or min_frames < 1 or max_frames < min_frames:
            raise ValueError(
                "need neighbours >= 1, min_frames >= 1 and max_frames >= min_frames; got "
                f"{neighbours=}, {min_frames=}, {max_frames=}"
            )
        if not 0 <= z_low < z_high:
            raise ValueError(f"need 0 <= z_low < z_high, got {z_low=}, {z_high=}")
        self.size = (int(size[0]), int(size[1]))
        self.max_frames = max_frames
        self.neighbours = neighbours
        self.min_frames = min_frames
        self.z_low, self.z_high, self.noise_floor = z_low, z_high, noise_floor
        # the last frame seen and its entry (foreground() then update() on the same frame);
        # a weak reference, so that a full-size frame is not kept alive per camera
        self._last: tuple[weakref.ref[np.ndarray], _Entry] | None = None
        self._memory: dict[Mode, _Memory] = {
            "colour": _Memory(max_frames),
            "ir": _Memory(max_frames),
        }

    # -- state

    def state(self) -> dict[str, int]:
        """Frames held per mode, e.g. ``{"colour": 37, "ir": 4}``."""
        return {mode: len(mem) for mode, mem in self._memory.items()}

    def ready(self, image_or_mode: np.ndarray | Mode) -> bool:
        """Whether the mode of this image (or the mode named) has ``min_frames`` frames."""
        mode = image_or_mode if isinstance(image_or_mode, str) else image_mode(image_or_mode)
        return len(self._memory[mode]) >= self.min_frames

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays holding the memories (they grow with the frames learnt)."""
        return sum(mem.nbytes for mem in self._memory.values())

    @property
    def max_nbytes(self) -> int:
        """``nbytes`` once both modes hold ``max_frames`` frames (about 21 MB by default)."""
        h, w = self.size
        row = 3 * (h + 2) * w + 4 * _DESC * _DESC * 3 + 8
        return len(self._memory) * self.max_frames * row

    # -- learning

    def _entry(self, image: np.ndarray) -> _Entry:
        if self._last is not None and self._last[0]() is image:
            return self._last[1]  # foreground() then update() on the same frame
        h, w = self.size
        small = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        planes = np.empty((3, h + 2, w), np.uint8)
        cv2.mixChannels(
            [small], [planes[0, 1:-1], planes[1, 1:-1], planes[2, 1:-1]], [0, 0, 1, 1, 2, 2]
        )
        planes[:, 0], planes[:, -1] = planes[:, 2], planes[:, -3]
        desc = cv2.resize(small, (_DESC, _DESC), interpolation=cv2.INTER_AREA)
        desc = desc.astype(np.float32).ravel() - 128.0
        entry = _Entry(planes, desc, float(desc.astype(np.float64) @ desc))
        self._last = (weakref.ref(image), entry)
        return entry

    def update(self, image: np.ndarray, *, has_animal: bool = False) -> bool:
        """Add a frame to its mode's memory; returns whether it was added.

        Pass ``has_animal=True`` for a frame the classifier is confident shows an animal: it is
        then left out, so a lingering animal does not become part of the scene.
        """
        image = _check_image(image)
        if has_animal:
            return False
        self._memory[image_mode(image)].add(self._entry(image))
        self._last = None  # learnt: its entry is not needed again
        return True

    # -- asking

    def foreground(
        self, image: np.ndarray, *, shape: tuple[int, int] | None = None
    ) -> np.ndarray | None:
        """Probability-like foreground [H,W] float32 in 0..1, or None if the mode is not ready.

        Args:
            image: RGB uint8 frame [H,W,3] from this camera.
            shape: (H, W) of the result; the working size by default (masks are compared on
                normalised coordinates, so there is no need to go back to full resolution).
        """
        image = _check_image(image)
        mem = self._memory[image_mode(image)]
        n = len(mem)
        if n < self.min_frames:
            return None
        e = self._entry(image)
        # squared distances between thumbnails, exact: the float32 products and sums are whole
        # numbers under 2**24 (levels centred on 0), the rest whole numbers in float64
        dots = (mem.descs[:n] @ e.desc).astype(np.float64)
        dist = mem.norms[:n] - 2.0 * dots + e.norm
        slots = mem.oldest_first()
        dist = dist[slots]  # ties go to the older frame
        order = np.argsort(dist, kind="stable")
        order = order[dist[order] > 0][: self.neighbours]  # not itself
        if len(order) == 0:
            order = np.array([np.argmin(dist)])
        k, (h, w) = len(order), self.size
        # the frame's and its neighbours' blurred planes: one 3x3 blur of them all stacked
        stacked = (k + 1, 3, h + 2, w)
        padded = _scratch_array("padded", stacked, np.uint8)
        padded[0] = e.planes
        np.stack([mem.planes[i] for i in slots[order]], out=padded[1:])
        blurred = _blur(padded, _scratch_array("blurred", stacked))[:, :, 1:-1]
        frame, stack = blurred[0], blurred[1:]  # [3,S,S] and [K,3,S,S], views
        # per-channel gain, the median pixel ratio: robust to the animal itself (< half the frame)
        sub = frame[:, ::4, ::4] + 1.0  # every 4th pixel, plus 1
        ratio = sub / (stack[:, :, ::4, ::4] + 1.0)  # [K,3,h,w]
        gain = _median_last(ratio.reshape(k, 3, -1))
        np.multiply(stack, gain[:, :, None, None], out=stack)
        bg = _median0(stack, out=_scratch_array("bg", frame.shape))
        spread = _median0(  # per channel
            np.abs(np.subtract(stack, bg, out=stack), out=stack),
            out=_scratch_array("spread", frame.shape),
        )
        sigma = np.maximum(np.maximum(spread[0], spread[1]), spread[2])
        sigma *= 1.4826
        np.maximum(sigma, self.noise_floor, out=sigma)
        diff = np.abs(np.subtract(frame, bg, out=bg), out=bg)
        z = np.maximum(np.maximum(diff[0], diff[1]), diff[2])
        z /= sigma
        z -= self.z_low
        z /= self.z_high - self.z_low
        fg = np.clip(z, 0.0, 1.0, out=z)
        fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
        if shape is not None and tuple(shape) != fg.shape:
            fg = cv2.resize(fg, (int(shape[1]), int(shape[0])), interpolation=cv2.INTER_LINEAR)
        return np.clip(fg, 0.0, 1.0)


def camera_key(path: str | Path) -> str:
    """The camera a frame belongs to: its folder (camera traps write one folder per camera)."""
    return str(Path(path).parent)


class CameraBackgrounds:
    """One ``BackgroundModel`` per camera, created on first sight with the same options, the
    models together within ``max_bytes``.

    Keys are camera folders (``camera_key(path)``) or any string the caller chooses.

    Why a budget: the watcher runs for weeks on small devices with one folder per camera, and
    each camera's model grows to ``max_nbytes`` (about 21 MB at the defaults: 200 day and 200
    night frames), so without a bound memory would grow with the number of cameras. When a
    frame learnt takes the models' ``nbytes`` over ``max_bytes``, the least recently used
    cameras' models are dropped (logged at info level) until it fits again; such a camera
    starts learning afresh from its next frame, scored by the segmenter alone meanwhile.
    The default, 128 MB (6 cameras with full day and night memories, 12 with day only, more
    while they fill), keeps the watcher, about 390 MB without its models with the default
    bundle, well inside its 600 MB target.
    """

    def __init__(self, *, max_bytes: int = DEFAULT_MAX_BYTES, **options: object) -> None:
        probe = BackgroundModel(**options)  # type: ignore[arg-type]  # check the options now
        if max_bytes < probe.max_nbytes:
            raise ValueError(
                f"max_bytes={max_bytes} is less than one camera's full model "
                f"({probe.max_nbytes} bytes with these options)"
            )
        self.max_bytes = max_bytes
        self._options = options
        self._models: OrderedDict[str, BackgroundModel] = OrderedDict()  # least recent first
        self._sizes: dict[str, int] = {}  # each model's nbytes when last counted
        self._nbytes = 0  # their sum
        self.evictions = 0

    @property
    def nbytes(self) -> int:
        """Bytes held by the cameras' models as learnt through ``update`` (<= ``max_bytes``)."""
        return self._nbytes

    def model(self, camera: str) -> BackgroundModel:
        """The model for ``camera``, created empty if new (or dropped); now the most recent."""
        m = self._models.get(camera)
        if m is None:
            m = self._models[camera] = BackgroundModel(**self._options)  # type: ignore[arg-type]
        else:
            self._models.move_to_end(camera)
        return m

    def update(self, camera: str, image: np.ndarray, *, has_animal: bool = False) -> bool:
        m = self.model(camera)
        added = m.update(image, has_animal=has_animal)
        size = m.nbytes
        self._nbytes += size - self._sizes.get(camera, 0)
        self._sizes[camera] = size
        while self._nbytes > self.max_bytes:  # never the model just used: it fits alone
            self._evict(next(iter(self._models)))
        return added

    def _evict(self, camera: str) -> None:
        m = self._models.pop(camera)
        self._nbytes -= self._sizes.pop(camera, 0)
        self.evictions += 1
        state = m.state()
        log.info(
            "background model of camera %s dropped (%d day and %d night frames, %.1f MB): "
            "the models of %d cameras were over their %.0f MB budget; it learns again from "
            "its next frame",
            camera,
            state["colour"],
            state["ir"],
            m.nbytes / 2**20,
            len(self._models) + 1,
            self.max_bytes / 2**20,
        )

    def foreground(
        self, camera: str, image: np.ndarray, *, shape: tuple[int, int] | None = None
    ) -> np.ndarray | None:
        """The camera's foreground mask, None until its model is ready. Looking changes
        nothing: no model is made for a new camera, and the eviction order stays as it was."""
        m = self._models.get(camera)
        return None if m is None else m.foreground(image, shape=shape)

    def state(self) -> dict[str, dict[str, int]]:
        """Frames held per camera and mode."""
        return {cam: m.state() for cam, m in self._models.items()}

    def models(self) -> dict[str, BackgroundModel]:
        """The models held, least recently used first (looking does not count as use)."""
        return dict(self._models)

    def __contains__(self, camera: object) -> bool:
        return camera in self._models

    def __len__(self) -> int:
        return len(self._models)


def combine_masks(
    learned: np.ndarray,
    background: np.ndarray,
    *,
    how: Combine = "geometric",
    shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """Fuse the segmenter's mask and the background mask into one float32 mask in [0, 1].

    Both are resized (bilinear) to ``shape``, or to the learned mask's shape by default.

    - "geometric" (default): ``sqrt(L * B)``. High only where both agree. Each source fails in
      its own way (the segmenter sees animal-like texture, the background sees shadows, wind
      and light), and Over-MAP against a too-large mask inflates trust in a label that was not
      looking at the animal; a too-small mask lowers trust and sends the frame to a person,
      the safe failure for triage. Keeps the soft scale (sqrt(0.8*0.8) = 0.8).
    - "mean": ``(L + B) / 2``, a soft vote.
    - "max": union; "min": strict intersection; "product": ``L * B`` (sharper than geometric).
    """
    L = np.asarray(learned, dtype=np.float32)
    B = np.asarray(background, dtype=np.float32)
    for name, a in (("learned", L), ("background", B)):
        if a.ndim != 2 or 0 in a.shape:
            raise ValueError(f"{name} mask must be [H,W], got shape {a.shape}")
        if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
            raise ValueError(f"{name} mask must be finite and in [0, 1]")
    H, W = (int(shape[0]), int(shape[1])) if shape is not None else L.shape
    if L.shape != (H, W):
        L = cv2.resize(L, (W, H), interpolation=cv2.INTER_LINEAR)
    if B.shape != (H, W):
        B = cv2.resize(B, (W, H), interpolation=cv2.INTER_LINEAR)
    if how == "geometric":
        out = np.sqrt(L * B)
    elif how == "mean":
        out = (L + B) / 2
    elif how == "max":
        out = np.maximum(L, B)
    elif how == "min":
        out = np.minimum(L, B)
    elif how == "product":
        out = L * B
    else:
        raise ValueError(f"how must be one of geometric, mean, max, min, product; got {how!r}")
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def pick_mask(
    learned: np.ndarray | None,
    background: np.ndarray | None,
    *,
    how: Combine = "geometric",
) -> tuple[np.ndarray | None, str | None]:
    """The mask to score against and its source name for ``FrameScore.mask_source``.

    Both present: ``combine_masks`` ("combined"); one present: that one ("segmenter" or
    "background"); neither: (None, None), and Over-MAP cannot be computed for the frame.
    """
    if learned is not None and background is not None:
        return combine_masks(learned, background, how=how), "combined"
    if learned is not None:
        return np.asarray(learned, dtype=np.float32), "segmenter"
    if background is not None:
        return np.asarray(background, dtype=np.float32), "background"
    return None, None
