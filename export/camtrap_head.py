"""The default camera-trap head: empty / animal / person / vehicle on the frozen Lite0 backbone.

The ImageNet classifier knows no "empty", so a bundle built on it alone can only guess at empty
frames from how quiet the foreground is, and a quiet foreground hides small, still or night
animals. This head learns the four MegaDetector categories from the pooled labelled frames of
every source in ../shared/data/camtrap (species labels count as "animal"), so the device can
say "empty" on evidence. The ImageNet names stay in the bundle as a species *guess*.

Everything here works on features computed once per frame (`export.train_head.
extract_features`, the pooled 1280-d backbone vector) for each resize mode measured, and kept
in a cache file. Leave-one-source-out (train on every source but one, test on it) then costs
seconds per fold, which is what lets the resize mode and the "empty" threshold be chosen by
measurement on cameras the head has never seen.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.bundle import InputSpec
from edge.categories import CATEGORIES, md_category
from edge.linear_head import fit_head
from edge.overmap import softmax
from export.lite0 import MEAN, STD, load_imagenet_lite0
from export.train_head import extract_features

RESIZE_MODES = ("stretch", "letterbox", "center_crop")
SIZE = (224, 224)


def spec_for(resize: str) -> InputSpec:
    return InputSpec(size=SIZE, mean=MEAN, std=STD, resize=resize)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Frame:
    """One labelled frame of the pooled set."""

    file: str
    source: str
    camera: str
    label: str
    category: str


def pooled_frames(labels_csv: Path) -> list[Frame]:
    """Every frame of the labels CSV whose label maps to a category ("unknown" is left out)."""
    with Path(labels_csv).open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    out = []
    for r in rows:
        cat = md_category(r["label"])
        if cat is not None:
            out.append(
                Frame(
                    r["file"], r.get("source", ""), r.get("camera_or_sequence", ""), r["label"], cat
                )
            )
    if not out:
        raise ValueError(f"{labels_csv}: no frame with a usable label")
    return out


def cached_cues(
    frames: Sequence[Frame], root: Path, cache: Path, modes: Sequence[str] = RESIZE_MODES
) -> dict[str, dict[str, np.ndarray]]:
    """The frames' features for every mode, read from `cache` (an .npz) when it holds these
    frames."""
    files = np.array([f.file for f in frames])
    if cache.is_file():
        z = np.load(cache, allow_pickle=False)
        if np.array_equal(z["files"], files) and all(f"{m}.features" in z for m in modes):
            return {m: {"features": z[f"{m}.features"]} for m in modes}
    model = load_imagenet_lite0()
    paths = [root / f.file for f in frames]
    out = {
        m: {"features": extract_features(model, paths, spec=spec_for(m), progress=False)}
        for m in modes
    }
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, files=files, **{f"{m}.{k}": v for m, d in out.items() for k, v in d.items()})
    return out


# ---- the head and its out-of-source test ---------------------------------------------------
# The head itself is edge.linear_head.fit_head: the device fits a camera's head from answers
# with the same function.


def probs_of(head: dict[str, Any], X: np.ndarray) -> np.ndarray:
    return softmax(
        np.asarray(X, np.float64) @ head["weight"].T.astype(np.float64)
        + head["bias"].astype(np.float64)
    )


def leave_one_source_out(
    X: np.ndarray, y: np.ndarray, sources: Sequence[str], *, C: float = 0.1
) -> np.ndarray:
    """Out-of-source probabilities [N,K]: each source's frames scored by a head trained on
    every other source."""
    src = np.asarray(sources)
    P = np.zeros((len(y), len(CATEGORIES)))
    for s in sorted(set(src)):
        test = src == s
        P[test] = probs_of(fit_head(X[~test], y[~test], C=C), X[test])
    return P


EMPTY = CATEGORIES.index("empty")


def empty_outcome(P: np.ndarray, y: np.ndarray, *, t_empty: float) -> dict[str, Any]:
    """What "set aside as empty when P(empty) >= t_empty" does: the share of true empties set
    aside, and the non-empty frames it would lose."""
    aside = P[:, EMPTY] >= t_empty
    empty = y == EMPTY
    lost = aside & ~empty
    return {
        "empties": int(empty.sum()),
        "empties_set_aside": int((aside & empty).sum()),
        "empty_recall": float((aside & empty).sum() / max(1, empty.sum())),
        "non_empty": int((~empty).sum()),
        "non_empty_lost": int(lost.sum()),
        "non_empty_lost_share": float(lost.sum() / max(1, (~empty).sum())),
    }


def per_source_report(
    P: np.ndarray, y: np.ndarray, sources: Sequence[str], *, t_empty: float
) -> dict[str, dict[str, Any]]:
    """empty_outcome per held-out source, plus people and vehicles found (predicted as such)."""
    src = np.asarray(sources)
    out = {}
    for s in sorted(set(src)):
        m = src == s
        r = empty_outcome(P[m], y[m], t_empty=t_empty)
        pred = P[m].argmax(1)
        for name in ("person", "vehicle"):
            k = CATEGORIES.index(name)
            r[f"{name}s"] = int((y[m] == k).sum())
            r[f"{name}s_found"] = int(((y[m] == k) & (pred == k)).sum())
        r["accuracy"] = float((pred == y[m]).mean())
        out[s] = r
    return out


def safest_threshold(
    P: np.ndarray,
    y: np.ndarray,
    sources: Sequence[str],
    *,
    max_lost: float = 0.01,
    grid: Sequence[float] | None = None,
) -> float:
    """The lowest P(empty) threshold at which no held-out source loses `max_lost` or more of
    its non-empty frames to "empty" (the worst camera decides, not the average)."""
    grid = grid if grid is not None else np.round(np.arange(0.5, 0.9995, 0.005), 4)
    src = np.asarray(sources)
    for t in grid:
        worst = max(
            empty_outcome(P[src == s], y[src == s], t_empty=float(t))["non_empty_lost_share"]
            for s in set(src)
        )
        if worst < max_lost:
            return float(t)
    return 1.0
