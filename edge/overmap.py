"""Over-MAP: how much of where the classifier looked falls on the animal.

A classifier that is right tends to look at the animal (Kantor et al., AAAI 2021). Over-MAP
is the overlap between its localisation map ``M`` (the class activation map, Grad-CAM at the
last block, any resolution) and the animal's mask ``S`` (a segmenter's foreground probability,
a background difference, boxes or a ground-truth mask). Confidence grows with overlap.

Conventions, shared by every measure here:

- Arrays are ``[H, W]`` with row = y (downwards) and column = x (rightwards), one frame, or
  ``[N, H, W]`` for a batch (then the measure returns an array of ``N`` floats).
- The map is upsampled bilinearly (OpenCV) to the mask's size, so a 7x7 map is compared on the
  mask's grid. Negative map values are clipped to 0: the map is ``ReLU(...)`` by definition and
  negative evidence is not attention.
- The mask is binary or soft, in ``[0, 1]`` (a probability that the pixel is animal).
- NaN or infinite values anywhere are refused with ``ValueError`` by default; pass
  ``nan="zero"`` to treat them as 0 (a map from a broken model should not pass silently).
- An all-zero map (the classifier looked nowhere) scores 0.0, and an empty mask (no animal
  found) scores 0.0: no evidence that the classifier looked at an animal. Whether the frame is
  empty is a separate question, answered by ``foreground_fraction`` and the label.

Measures are plain functions registered by name in ``MEASURES``; ``overmap()`` is the one entry
point and ``register_measure()`` adds a new one without touching the callers.

Example:
    >>> import numpy as np
    >>> cam = np.zeros((7, 7)); cam[:3, :3] = 1.0          # looked at the top-left
    >>> mask = np.zeros((224, 224)); mask[:112, :112] = 1  # animal in the top-left
    >>> round(overmap(cam, mask), 2) > 0.9
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import cv2
import numpy as np

NanPolicy = Literal["raise", "zero"]
MaskSource = Literal["segmenter", "background", "combined", "boxes", "file"]


class Measure(Protocol):
    """A measure: (map, mask, keyword options) -> float for [H,W], array [N] for [N,H,W]."""

    def __call__(
        self, map: np.ndarray, mask: np.ndarray, **options: object
    ) -> float | np.ndarray: ...


# ----------------------------------------------------------------------------- input checks


def _clean(a: np.ndarray, what: str, nan: NanPolicy) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    bad = ~np.isfinite(a)
    if bad.any():
        if nan == "raise":
            raise ValueError(
                f"{what} has {int(bad.sum())} NaN/inf values; fix the producer, or pass "
                "nan='zero' to treat them as 0"
            )
        if nan != "zero":
            raise ValueError(f"nan must be 'raise' or 'zero', got {nan!r}")
        a = np.where(bad, 0.0, a)
    return a


def upsample(map: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize a map [h,w] (or [N,h,w]) to ``shape`` = (H, W) bilinearly, clipped to >= 0.

    Bilinear, like the CAM paper's upsampling; OpenCV takes (width, height), so the swap is done
    here once. A map already at ``shape`` is returned unchanged (only clipped).
    """
    m = np.asarray(map, dtype=np.float64)
    H, W = int(shape[0]), int(shape[1])
    if m.ndim == 3:
        return np.stack([upsample(x, (H, W)) for x in m]) if len(m) else m.reshape(0, H, W)
    if m.ndim != 2:
        raise ValueError(f"map must be [h,w] or [N,h,w], got shape {m.shape}")
    if m.shape != (H, W):
        m = cv2.resize(m, (W, H), interpolation=cv2.INTER_LINEAR)
    return np.maximum(m, 0.0)


def prepare(
    map: np.ndarray, mask: np.ndarray, *, nan: NanPolicy = "raise"
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Check and align a map and a mask; return (map [N,H,W], mask [N,H,W], batched).

    The map is upsampled to the mask's size and clipped to >= 0. Raises ValueError for
    mismatched ranks, batch sizes, a mask outside [0, 1], or NaN (unless ``nan="zero"``).
    """
    m = _clean(map, "map", nan)
    s = _clean(mask, "mask", nan)
    if m.ndim != s.ndim:
        raise ValueError(
            f"map and mask must have the same rank ([H,W] with [H,W], or [N,h,w] with [N,H,W]); "
            f"got map {m.shape} and mask {s.shape}"
        )
    if m.ndim not in (2, 3):
        raise ValueError(f"expected [H,W] or [N,H,W] arrays, got map {m.shape}, mask {s.shape}")
    batched = m.ndim == 3
    if not batched:
        m, s = m[None], s[None]
    if len(m) != len(s):
        raise ValueError(f"batch sizes differ: {len(m)} maps, {len(s)} masks")
    if s.size and (s.min() < 0.0 or s.max() > 1.0):
        raise ValueError(
            f"mask values must lie in [0, 1] (got {s.min():.3g}..{s.max():.3g}); pass a "
            "probability or a 0/1 mask, e.g. mask_from_file() for trimaps"
        )
    if 0 in s.shape[1:]:
        raise ValueError(f"mask has an empty spatial size: {s.shape[1:]}")
    return upsample(m, s.shape[1:]), s, batched


def _out(values: np.ndarray, batched: bool) -> float | np.ndarray:
    return values if batched else float(values[0])


def binarize(map: np.ndarray, *, frac: float = 0.5, top_k: float | None = None) -> np.ndarray:
    """Where the classifier looked, as a 0/1 array: ``M >= frac * max(M)``, or the top-k %.

    Args:
        map: [N,H,W] non-negative maps (already at the mask's size).
        frac: relative threshold in (0, 1]; 0.5 keeps pixels at least half the peak.
        top_k: if given, a percentage in (0, 100]: keep exactly the ``ceil(top_k/100 * H*W)``
            highest pixels (ties broken by position, so the count is exact). Overrides ``frac``.

    An all-zero map selects nothing.
    """
    if top_k is None and not 0.0 < frac <= 1.0:
        raise ValueError(f"frac must be in (0, 1], got {frac}")
    if top_k is not None and not 0.0 < top_k <= 100.0:
        raise ValueError(f"top_k is a percentage in (0, 100], got {top_k}")
    n = len(map)
    flat = map.reshape(n, -1)
    out = np.zeros_like(flat)
    peak = flat.max(axis=1) if flat.shape[1] else np.zeros(n)
    for i in range(n):
        if peak[i] <= 0.0:
            continue
        if top_k is None:
            out[i] = flat[i] >= frac * peak[i]
        else:
            k = max(1, int(np.ceil(top_k / 100.0 * flat.shape[1])))
            out[i, np.argsort(-flat[i], kind="stable")[:k]] = 1.0
    return out.reshape(map.shape)


# ----------------------------------------------------------------------------- the measures


def energy(map: np.ndarray, mask: np.ndarray, *, nan: NanPolicy = "raise") -> float | np.ndarray:
    """Share of the map's mass that falls on the animal: the default Over-MAP.

    ``energy = sum(M * S) / sum(M)`` over the mask's pixels, with M upsampled to S's size.
    In [0, 1]: 1 when all attention is on the animal, 0 when none is. With a soft mask, each
    pixel's attention counts in proportion to the probability that it is animal.
    An all-zero map or an empty mask gives 0.0 (no evidence of looking at an animal).

    Args:
        map: [h,w] or [N,h,w], non-negative (negatives are clipped to 0).
        mask: [H,W] or [N,H,W] in [0, 1].
        nan: "raise" (default) or "zero" to treat NaN/inf as 0.

    Returns:
        A float for one frame, an array [N] for a batch.
    """
    m, s, batched = prepare(map, mask, nan=nan)
    total = m.sum(axis=(1, 2))
    inside = (m * s).sum(axis=(1, 2))
    vals = np.divide(inside, total, out=np.zeros_like(total), where=total > 0)
    return _out(np.clip(vals, 0.0, 1.0), batched)


def iou_at(
    map: np.ndarray,
    mask: np.ndarray,
    *,
    frac: float = 0.5,
    top_k: float | None = None,
    nan: NanPolicy = "raise",
) -> float | np.ndarray:
    """IoU between the map thresholded (see ``binarize``) and the mask.

    ``IoU = sum(min(B, S)) / sum(max(B, S))`` with B the 0/1 thresholded map. For a 0/1 mask
    this is the usual |B and S| / |B or S|; for a soft mask it is the soft (fuzzy Jaccard) IoU,
    chosen over thresholding S at 0.5 so that the segmenter's uncertainty is kept, not hidden.
    0.0 when both are empty (nothing looked at, no animal), or when either is empty.

    Args:
        frac: keep map pixels ``>= frac * max(M)`` (default 0.5).
        top_k: percentage of pixels to keep instead, e.g. 15 for the top 15 %.
    """
    m, s, batched = prepare(map, mask, nan=nan)
    b = binarize(m, frac=frac, top_k=top_k)
    inter = np.minimum(b, s).sum(axis=(1, 2))
    union = np.maximum(b, s).sum(axis=(1, 2))
    return _out(np.divide(inter, union, out=np.zeros_like(inter), where=union > 0), batched)


def dice(
    map: np.ndarray,
    mask: np.ndarray,
    *,
    frac: float = 0.5,
    top_k: float | None = None,
    nan: NanPolicy = "raise",
) -> float | np.ndarray:
    """Dice (F1) between the thresholded map and the mask: ``2 sum(B*S) / (sum(B) + sum(S))``.

    B is the 0/1 map from ``binarize`` (``frac`` or ``top_k`` as in ``iou_at``); a soft mask is
    used as is (soft Dice). Dice = 2 IoU / (1 + IoU) for binary inputs; it is gentler on small
    animals. 0.0 when both are empty or when either is empty.
    """
    m, s, batched = prepare(map, mask, nan=nan)
    b = binarize(m, frac=frac, top_k=top_k)
    inter = (b * s).sum(axis=(1, 2))
    denom = b.sum(axis=(1, 2)) + s.sum(axis=(1, 2))
    return _out(np.divide(2 * inter, denom, out=np.zeros_like(inter), where=denom > 0), batched)


def pointing_game(
    map: np.ndarray, mask: np.ndarray, *, nan: NanPolicy = "raise"
) -> float | np.ndarray:
    """1.0 if the map's peak (argmax, after upsampling) lies on the animal (``S > 0.5``), else 0.

    The first maximum in row-major order is used when several pixels tie. An all-zero map has no
    peak and scores 0.0.
    """
    m, s, batched = prepare(map, mask, nan=nan)
    flat_m, flat_s = m.reshape(len(m), -1), s.reshape(len(s), -1)
    idx = flat_m.argmax(axis=1)
    hit = flat_s[np.arange(len(m)), idx] > 0.5
    hit &= flat_m.max(axis=1) > 0
    return _out(hit.astype(np.float64), batched)


MEASURES: dict[str, Measure] = {
    "energy": energy,
    "iou": iou_at,
    "dice": dice,
    "pointing_game": pointing_game,
}


def register_measure(name: str, fn: Measure, *, overwrite: bool = False) -> None:
    """Add a measure under ``name`` so ``overmap(..., measure=name)`` finds it.

    ``fn(map, mask, **options)`` must follow the module's conventions (use ``prepare()``).
    Refuses to replace an existing name unless ``overwrite=True``.
    """
    if name in MEASURES and not overwrite:
        raise ValueError(f"measure {name!r} is already registered; pass overwrite=True")
    MEASURES[name] = fn


def overmap(
    map: np.ndarray, mask: np.ndarray, *, measure: str = "energy", **options: object
) -> float | np.ndarray:
    """Over-MAP of a map against a mask with the measure named ``measure``.

    Args:
        map: [h,w] or [N,h,w] localisation map(s), any resolution.
        mask: [H,W] or [N,H,W] animal mask(s) in [0, 1].
        measure: a name in ``MEASURES`` ("energy" by default, "iou", "dice", "pointing_game").
        **options: passed to the measure (``frac``, ``top_k``, ``nan``).

    Returns:
        A float for one frame, an array [N] for a batch.
    """
    try:
        fn = MEASURES[measure]
    except KeyError:
        raise ValueError(
            f"unknown measure {measure!r}; choose one of {sorted(MEASURES)} or register_measure()"
        ) from None
    return fn(map, mask, **options)


# ----------------------------------------------------------------------------- probabilities


def softmax(logits: np.ndarray, *, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax: ``exp(z - max z) / sum exp(z - max z)`` along ``axis``."""
    z = np.asarray(logits, dtype=np.float64)
    if not np.isfinite(z).all():
        raise ValueError("logits contain NaN/inf; the classifier output is broken")
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def entropy(probs: np.ndarray, *, axis: int = -1, normalise: bool = False) -> np.ndarray | float:
    """Shannon entropy ``-sum p log p`` (nats) along ``axis``; 0 log 0 is taken as 0.

    With ``normalise=True`` it is divided by ``log C`` so it lies in [0, 1] whatever the number of
    classes C (1 = uniform, 0 = one-hot).
    """
    p = np.asarray(probs, dtype=np.float64)
    if (p < 0).any() or not np.isfinite(p).all():
        raise ValueError("probs must be finite and non-negative; pass softmax(logits)")
    logp = np.log(np.where(p > 0, p, 1.0))
    h = -(p * logp).sum(axis=axis)
    if normalise:
        c = p.shape[axis]
        h = h / np.log(c) if c > 1 else np.zeros_like(h)
    return float(h) if np.ndim(h) == 0 else h


# ----------------------------------------------------------------------------- one frame


@dataclass
class FrameScore:
    """What the device knows about one frame after scoring; the map and mask are the evidence.

    Attributes:
        label: top class name.
        class_index: its index.
        softmax: its probability (the max softmax).
        top_k: the best classes as (name, probability), most probable first.
        overmap: the Over-MAP value under ``measure``.
        measure: the measure's name.
        foreground_fraction: mean of the mask, the share of the frame that is animal.
        mask_source: where the mask came from: segmenter, background, combined, boxes or file.
        map: the map upsampled to the mask's size (float32), kept to show the person.
        mask: the mask (float32).
    """

    label: str
    class_index: int
    softmax: float
    top_k: list[tuple[str, float]]
    overmap: float
    measure: str
    foreground_fraction: float
    mask_source: str
    map: np.ndarray = field(repr=False)
    mask: np.ndarray = field(repr=False)


def score_frame(
    probs: np.ndarray,
    cam: np.ndarray,
    mask: np.ndarray,
    *,
    classes: Sequence[str],
    measure: str = "energy",
    mask_source: MaskSource = "segmenter",
    top_k: int = 3,
    **options: object,
) -> FrameScore:
    """Score one frame from the classifier's probabilities, its map and an animal mask.

    Args:
        probs: [C] class probabilities (``softmax(logits)``), summing to 1.
        cam: [h,w] the map for the top class, before upsampling.
        mask: [H,W] animal mask in [0, 1].
        classes: the C class names, in the classifier's order.
        measure: Over-MAP measure name (see ``MEASURES``).
        mask_source: recorded as is, so a reviewer knows what the overlap was measured against.
        top_k: how many (name, probability) pairs to keep.
        **options: passed to the measure.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"probs must be one frame's [C] vector, got shape {p.shape}")
    if len(classes) != len(p):
        raise ValueError(f"{len(p)} probabilities but {len(classes)} class names")
    if not np.isfinite(p).all() or (p < 0).any() or abs(p.sum() - 1.0) > 1e-3:
        raise ValueError("probs must be non-negative and sum to 1; pass softmax(logits)")
    m, s, _ = prepare(cam, mask, nan=options.get("nan", "raise"))  # type: ignore[arg-type]
    value = overmap(cam, mask, measure=measure, **options)
    order = np.argsort(-p, kind="stable")[: max(1, top_k)]
    c = int(order[0])
    return FrameScore(
        label=str(classes[c]),
        class_index=c,
        softmax=float(p[c]),
        top_k=[(str(classes[i]), float(p[i])) for i in order],
        overmap=float(value),
        measure=measure,
        foreground_fraction=float(s.mean()),
        mask_source=mask_source,
        map=m[0].astype(np.float32),
        mask=s[0].astype(np.float32),
    )


__all__: list[str] = [
    "MEASURES",
    "FrameScore",
    "Measure",
    "binarize",
    "dice",
    "energy",
    "entropy",
    "iou_at",
    "overmap",
    "pointing_game",
    "prepare",
    "register_measure",
    "score_frame",
    "softmax",
    "upsample",
]
