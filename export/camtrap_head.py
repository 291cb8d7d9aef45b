"""The default camera-trap head: empty / animal / person / vehicle on the frozen Lite0 backbone.

The ImageNet classifier knows no "empty", so a bundle built on it alone can only guess at empty
frames from how quiet the foreground is, and a quiet foreground hides small, still or night
animals. This head learns the four MegaDetector categories from the pooled labelled frames of
every source in ../shared/data/camtrap (species labels count as "animal"), so the device can
say "empty" on evidence. The ImageNet names stay in the bundle as a species *guess*.

Everything here works on features computed once per frame and kept in a cache file: the
pooled 1280-d backbone vector and the share of the frame the bundle's segmenter calls
foreground, for each resize mode measured. Leave-one-source-out (train on every source but
one, test on it) then costs seconds per fold, which is what lets the resize mode and the
"empty" threshold be chosen by measurement on cameras the head has never seen.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge.bundle import InputSpec
from edge.categories import CATEGORIES, md_category
from edge.decode import load_image
from edge.linear_head import fit_head
from edge.overmap import softmax
from edge.preprocess import prepare
from export.lite0 import MEAN, STD, EfficientNetLite0, load_imagenet_lite0
from export.segmenter import lite0_taps

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
            out.append(Frame(r["file"], r.get("source", ""),
                             r.get("camera_or_sequence", ""), r["label"], cat))
    if not out:
        raise ValueError(f"{labels_csv}: no frame with a usable label")
    return out


@torch.no_grad()
def frame_cues(
    paths: Sequence[Path],
    spec: InputSpec,
    *,
    model: EfficientNetLite0 | None = None,
    seg_head: torch.nn.Module | None = None,
    batch_size: int = 32,
) -> dict[str, np.ndarray]:
    """Per frame: pooled backbone features [N,1280], ImageNet logits' top index [N] and, with a
    segmenter head, the foreground share [N] (mean of the sigmoid map), in one backbone pass."""
    model = (model or load_imagenet_lite0()).eval()
    feats, fg = [], []
    for i in range(0, len(paths), batch_size):
        x = torch.from_numpy(prepare([load_image(p) for p in paths[i : i + batch_size]], spec))
        f8, f16, deep = lite0_taps(model.features, x)
        feats.append(deep.mean(dim=(2, 3)).numpy())
        if seg_head is not None:
            fg.append(torch.sigmoid(seg_head(f8, f16, deep)).mean(dim=(1, 2, 3)).numpy())
    out = {"features": np.concatenate(feats).astype(np.float32)}
    if fg:
        out["foreground"] = np.concatenate(fg).astype(np.float32)
    return out


def cached_cues(frames: Sequence[Frame], root: Path, cache: Path,
                modes: Sequence[str] = RESIZE_MODES) -> dict[str, dict[str, np.ndarray]]:
    """frame_cues for every mode, read from `cache` (an .npz) when it holds these frames."""
    files = np.array([f.file for f in frames])
    if cache.is_file():
        z = np.load(cache, allow_pickle=False)
        if np.array_equal(z["files"], files) and all(f"{m}.features" in z for m in modes):
            return {m: {"features": z[f"{m}.features"], "foreground": z[f"{m}.foreground"]}
                    for m in modes}
    from export.segmenter import build_segmenter

    model = load_imagenet_lite0()
    seg = build_segmenter("lite0_seg").model.head.eval()
    paths = [root / f.file for f in frames]
    out = {m: frame_cues(paths, spec_for(m), model=model, seg_head=seg) for m in modes}
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, files=files, **{f"{m}.{k}": v for m, d in out.items() for k, v in d.items()})
    return out


# ---- the head and its out-of-source test ---------------------------------------------------
# The head itself is edge.linear_head.fit_head: the device fits a camera's head from answers
# with the same function.


def probs_of(head: dict[str, Any], X: np.ndarray) -> np.ndarray:
    return softmax(np.asarray(X, np.float64) @ head["weight"].T.astype(np.float64)
                   + head["bias"].astype(np.float64))


def leave_one_source_out(X: np.ndarray, y: np.ndarray, sources: Sequence[str], *,
                         C: float = 0.1) -> np.ndarray:
    """Out-of-source probabilities [N,K]: each source's frames scored by a head trained on
    every other source."""
    src = np.asarray(sources)
    P = np.zeros((len(y), len(CATEGORIES)))
    for s in sorted(set(src)):
        test = src == s
        P[test] = probs_of(fit_head(X[~test], y[~test], C=C), X[test])
    return P


EMPTY = CATEGORIES.index("empty")


def empty_outcome(P: np.ndarray, y: np.ndarray, fg: np.ndarray | None, *, t_empty: float,
                  fg_max: float | None = None) -> dict[str, Any]:
    """What "set aside as empty when P(empty) >= t_empty (and foreground < fg_max)" does:
    the share of true empties set aside, and the non-empty frames it would lose."""
    aside = P[:, EMPTY] >= t_empty
    if fg_max is not None and fg is not None:
        aside &= fg < fg_max
    empty = y == EMPTY
    lost = aside & ~empty
    return {
        "empties": int(empty.sum()), "empties_set_aside": int((aside & empty).sum()),
        "empty_recall": float((aside & empty).sum() / max(1, empty.sum())),
        "non_empty": int((~empty).sum()), "non_empty_lost": int(lost.sum()),
        "non_empty_lost_share": float(lost.sum() / max(1, (~empty).sum())),
    }


def per_source_report(P: np.ndarray, y: np.ndarray, sources: Sequence[str],
                      fg: np.ndarray | None, *, t_empty: float,
                      fg_max: float | None = None) -> dict[str, dict[str, Any]]:
    """empty_outcome per held-out source, plus people and vehicles found (predicted as such)."""
    src = np.asarray(sources)
    out = {}
    for s in sorted(set(src)):
        m = src == s
        r = empty_outcome(P[m], y[m], None if fg is None else fg[m], t_empty=t_empty,
                          fg_max=fg_max)
        pred = P[m].argmax(1)
        for name in ("person", "vehicle"):
            k = CATEGORIES.index(name)
            r[f"{name}s"] = int((y[m] == k).sum())
            r[f"{name}s_found"] = int(((y[m] == k) & (pred == k)).sum())
        r["accuracy"] = float((pred == y[m]).mean())
        out[s] = r
    return out


def safest_threshold(P: np.ndarray, y: np.ndarray, sources: Sequence[str], *,
                     max_lost: float = 0.01, grid: Sequence[float] | None = None) -> float:
    """The lowest P(empty) threshold at which no held-out source loses `max_lost` or more of
    its non-empty frames to "empty" (the worst camera decides, not the average)."""
    grid = grid if grid is not None else np.round(np.arange(0.5, 0.9995, 0.005), 4)
    src = np.asarray(sources)
    for t in grid:
        worst = max(empty_outcome(P[src == s], y[src == s], None, t_empty=float(t))
                    ["non_empty_lost_share"] for s in set(src))
        if worst < max_lost:
            return float(t)
    return 1.0
