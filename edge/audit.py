"""`edge audit`: rank a labelled training set by how suspicious each example's label is.

Two cues, both out of fold, so no example judges itself:

- **disagreement**: ``p_label``, the probability an out-of-fold linear head (K folds on the
  frozen backbone's pooled features, heads only, seconds) gives the example's own label. A
  low value means the rest of the data says otherwise (cleanlab's "self-confidence").
- **attention**: ``overmap_label``, the Over-MAP (edge.overmap, "energy" by default) of the
  same out-of-fold head's map for the given label's class against the object mask (the
  segmenter's foreground, or a true mask). A low value means the evidence for that label lies
  off the object: the animal tiny or hidden, or the label learnt from the background. For a
  label that names no object (an empty class), the map has no object to fall on; its
  agreement is instead how empty the mask is, ``1 - foreground``, so an "empty" frame with an
  animal in it looks suspicious too.

The rule (:func:`suspicion_from_cues`): each cue is turned into a percentile rank of its
distrust (``1 - p_label`` and ``1 - overmap_label``, 0 = least, 1 = most distrusted, ties
averaged) and ``suspicion`` is their weighted mean: in [0, 1], with no sampling, and
recomputable from the cues alone. By default the Over-MAP cue weighs 0 in it: on injected
label flips any weight on it found fewer flips (docs/audit.md), since a wrong class's map still
lands on the animal. What the attention cue finds is the other kind of misleading example, so
it gets a list of its own (:func:`looked_away`): labels the model agrees with whose evidence
lies off the object, the shortcut examples. ``foreground`` (the mask's share of the frame) is
reported beside them: a tiny object explains a low Over-MAP.

The core is plain functions on numpy arrays (:func:`fold_ids`, :func:`out_of_fold`,
:func:`label_maps`, :func:`audit`, :func:`suspicion_from_cues`, :func:`topk_precision_recall`);
reading frames, running the bundle and writing the JSON and HTML are the shell around it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from edge.evaluate import Row
from edge.linear_head import fit_head, head_cam, head_logits
from edge.overmap import overmap, softmax

if TYPE_CHECKING:
    from edge.bundle import Bundle

DEFAULT_WEIGHTS = (1.0, 0.0)  # p_label, overmap_label: measured on flips, docs/audit.md


# ----------------------------------------------------------------------------- the core


def fold_ids(labels: np.ndarray, *, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Stratified fold index [N] in 0..folds-1: each class dealt round the folds in a seeded
    random order, so every fold holds its share of every class (a class with fewer members
    than folds is in fewer folds; never an error)."""
    y = np.asarray(labels).astype(int).ravel()
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    if y.size < folds:
        raise ValueError(f"{y.size} examples cannot be split into {folds} folds")
    rng = np.random.default_rng(seed)
    out = np.empty(y.size, int)
    start = 0
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        out[idx] = (start + np.arange(idx.size)) % folds
        start = (start + idx.size) % folds  # the next class continues where this one stopped
    return out


@dataclass
class OutOfFold:
    """Out-of-fold predictions: probs [N,C] (each row from the head that never saw it), fold
    [N], and heads[f] = (weight [C,K], bias [C]) fitted without fold f."""

    probs: np.ndarray
    fold: np.ndarray
    heads: list[tuple[np.ndarray, np.ndarray]]


def out_of_fold(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    n_classes: int | None = None,
    folds: int = 5,
    seed: int = 0,
    C: float = 0.1,
) -> OutOfFold:
    """Fit one linear head per fold on the other folds (edge.linear_head.fit_head) and predict
    the held-out fold.

    features: [N,K] pooled backbone vectors. labels: [N] class indices 0..n_classes-1
    (n_classes defaults to max + 1). A class missing from a fold's training part gets
    probability ~0 there (fit_head's absent bias), which is what a lone example deserves.
    """
    X = np.asarray(features, np.float32)
    y = np.asarray(labels).astype(int).ravel()
    if X.ndim != 2 or len(X) != y.size:
        raise ValueError(f"features must be [N, K] with one row per label, got {X.shape}")
    n = int(y.max()) + 1 if n_classes is None else n_classes
    fold = fold_ids(y, folds=folds, seed=seed)
    probs = np.zeros((y.size, n), np.float64)
    heads: list[tuple[np.ndarray, np.ndarray]] = []
    for f in range(folds):
        test = fold == f
        head = fit_head(X[~test], y[~test], C=C, seed=seed, n_classes=n)
        heads.append((head["weight"], head["bias"]))
        probs[test] = softmax(head_logits(head["weight"], head["bias"], X[test]), axis=1)
    return OutOfFold(probs=probs, fold=fold, heads=heads)


def label_maps(oof: OutOfFold, fmap: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """The map [N,h,w] of class classes[i] for frame i, from the head of frame i's own fold
    (the one that never saw it). fmap: [N,K,h,w] backbone map layer (any float dtype)."""
    c = np.asarray(classes).astype(int).ravel()
    a = np.asarray(fmap)
    out = np.zeros((len(c), *a.shape[2:]), np.float32)
    for f, (weight, _) in enumerate(oof.heads):
        idx = np.flatnonzero(oof.fold == f)
        for s in range(0, idx.size, 256):  # bounded float32 copies of a float16 cache
            part = idx[s : s + 256]
            out[part] = head_cam(weight, a[part], c[part])
    return out


def _ranks(x: np.ndarray) -> np.ndarray:
    """Percentile ranks in [0, 1], ties averaged (0.5 for a single value)."""
    from scipy.stats import rankdata

    x = np.asarray(x, np.float64)
    if x.size < 2:
        return np.full(x.size, 0.5)
    return (rankdata(x, method="average") - 1) / (x.size - 1)


def suspicion_from_cues(
    p_label: np.ndarray,
    overmap_label: np.ndarray,
    *,
    weights: Sequence[float] = DEFAULT_WEIGHTS,
) -> np.ndarray:
    """suspicion [N] in [0, 1]: the weighted mean of the percentile ranks of 1 - p_label and
    1 - overmap_label (higher = more suspicious). Weights (w_p, w_overmap) >= 0, not both 0;
    (1, 0), the default, is cleanlab's self-confidence ranking.

    >>> suspicion_from_cues(np.array([0.9, 0.1, 0.5]), np.array([0.8, 0.2, 0.9])).round(2)
    array([0.25, 1.  , 0.25])
    """
    p = np.asarray(p_label, np.float64).ravel()
    o = np.asarray(overmap_label, np.float64).ravel()
    if p.shape != o.shape:
        raise ValueError(f"p_label {p.shape} and overmap_label {o.shape} must match")
    w = np.asarray(weights, np.float64)
    if w.shape != (2,) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be two non-negative numbers, not both 0; got {weights}")
    if not (np.isfinite(p).all() and np.isfinite(o).all()):
        raise ValueError("p_label and overmap_label must be finite")
    return (w[0] * _ranks(1 - p) + w[1] * _ranks(1 - o)) / w.sum()


def looked_away(predicted: np.ndarray, labels: np.ndarray, overmap_label: np.ndarray) -> np.ndarray:
    """[N] in [0, 1], NaN where the model disagrees with the label: among the examples whose
    out-of-fold head predicts their own label, the percentile rank of 1 - overmap_label (1 =
    its evidence lies furthest off the object). A right label learnt from the background (the
    grass of a bobcat's habitat, the water behind a dog) misleads training without any flip.

    >>> looked_away(np.array([0, 1, 1]), np.array([0, 1, 0]), np.array([0.9, 0.1, 0.5]))
    array([0., 1., nan])
    """
    agree = np.asarray(predicted).ravel() == np.asarray(labels).ravel()
    out = np.full(agree.shape, np.nan)
    if agree.any():
        out[agree] = _ranks(1 - np.asarray(overmap_label, np.float64).ravel()[agree])
    return out


def audit(
    features: np.ndarray,
    fmap: np.ndarray,
    labels: np.ndarray,
    masks: Sequence[np.ndarray] | np.ndarray,
    *,
    n_classes: int | None = None,
    empty_classes: Sequence[int] = (),
    folds: int = 5,
    seed: int = 0,
    C: float = 0.1,
    measure: str = "energy",
    weights: Sequence[float] = DEFAULT_WEIGHTS,
) -> dict[str, np.ndarray]:
    """Every example's cues and suspicion, in input order (sort by ``suspicion`` for a list).

    features [N,K], fmap [N,K,h,w]: the frozen backbone's outputs. labels [N]: the given class
    indices. masks: one object mask per frame in the classifier's view ([H,W] in [0, 1], any
    resolution; e.g. the segmenter's foreground[:, 0]). empty_classes: indices of labels that
    name no object (their attention cue is 1 - foreground, see the module's docstring).

    Returns arrays [N]: suspicion, looked_away (NaN where the model disagrees), p_label,
    predicted, p_predicted, overmap_label, foreground, fold; probs [N,C], the out-of-fold
    probabilities (what cleanlab takes); maps [N,h,w], the given label's out-of-fold map (what
    the page draws).

    >>> # see tests/edge/test_audit.py for real frames
    """
    y = np.asarray(labels).astype(int).ravel()
    if len(masks) != y.size:
        raise ValueError(f"{len(masks)} masks for {y.size} labels")
    oof = out_of_fold(features, y, n_classes=n_classes, folds=folds, seed=seed, C=C)
    maps = label_maps(oof, fmap, y)
    om = np.array([float(overmap(m, s, measure=measure)) for m, s in zip(maps, masks, strict=True)])
    fg = np.array([float(np.clip(np.asarray(s, np.float64), 0, 1).mean()) for s in masks])
    empty = np.isin(y, np.asarray(list(empty_classes), int))
    om = np.where(empty, 1.0 - fg, om)
    p_label = oof.probs[np.arange(y.size), y]
    predicted = oof.probs.argmax(1)
    return {
        "suspicion": suspicion_from_cues(p_label, om, weights=weights),
        "looked_away": looked_away(predicted, y, om),
        "p_label": p_label,
        "predicted": predicted,
        "p_predicted": oof.probs[np.arange(y.size), predicted],
        "overmap_label": om,
        "foreground": fg,
        "fold": oof.fold,
        "probs": oof.probs,
        "maps": maps,
    }


def topk_precision_recall(scores: np.ndarray, is_issue: np.ndarray, k: int) -> tuple[float, float]:
    """(precision, recall) of the k highest-scoring examples against the true issues (e.g.
    injected label flips): hits / k and hits / number of issues. Ties at the cut are broken by
    position (a stable sort), so the answer is exact and repeatable.

    >>> topk_precision_recall(np.array([0.9, 0.1, 0.8, 0.2]), np.array([1, 0, 0, 1]), 2)
    (0.5, 0.5)
    """
    s = np.asarray(scores, np.float64).ravel()
    t = np.asarray(is_issue, bool).ravel()
    if s.shape != t.shape:
        raise ValueError(f"scores {s.shape} and is_issue {t.shape} must match")
    if not 0 < k <= s.size:
        raise ValueError(f"k must be in 1..{s.size}, got {k}")
    top = np.argsort(-s, kind="stable")[:k]
    hits = int(t[top].sum())
    return hits / k, (hits / int(t.sum()) if t.any() else 0.0)


def rank_average(*scores: np.ndarray) -> np.ndarray:
    """The mean percentile rank of several scores (each: higher = more suspicious)."""
    if not scores:
        raise ValueError("rank_average needs at least one score")
    return np.mean([_ranks(s) for s in scores], axis=0)


# ----------------------------------------------------------------------------- the shell


@dataclass
class Extracted:
    """What the bundle says of each frame: features [N,K], fmap [N,K,h,w] (float16 to keep
    memory small), masks [N,H,W] in the classifier's view, and where each mask came from."""

    features: np.ndarray
    fmap: np.ndarray
    masks: list[np.ndarray]
    mask_source: list[str]


def extract(
    examples: Sequence[Row],
    bundle: Bundle,
    *,
    batch: int = 32,
    threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Extracted:
    """Run the bundle once over the frames (features, fmap, foreground); a true mask from the
    CSV replaces the segmenter's, mapped into the classifier's view."""
    from edge.decode import load_image
    from edge.masks import mask_from_file
    from edge.preprocess import view_of
    from edge.runtime import Runtime

    runtime = Runtime.from_bundle(bundle, features=True, threads=threads, max_batch=batch)
    spec = bundle.manifest.classifier.input
    feats, fmaps, masks, sources = [], [], [], []
    for i in range(0, len(examples), batch):
        chunk = examples[i : i + batch]
        images = [load_image(e.file) for e in chunk]
        out = runtime.run(images)
        feats.append(out.features)
        fmaps.append(out.fmap.astype(np.float16))
        for k, (e, im) in enumerate(zip(chunk, images, strict=True)):
            if e.mask is not None:
                m, valid = mask_from_file(e.mask, shape=im.shape[:2])
                masks.append(view_of(m * valid, im.shape[:2], spec))
                sources.append("file")
            else:
                masks.append(out.foreground[k, 0])
                sources.append("segmenter")
        if progress:
            progress(min(i + batch, len(examples)), len(examples))
    return Extracted(np.concatenate(feats), np.concatenate(fmaps), masks, sources)


def run_audit(
    examples: Sequence[Row],
    bundle: Bundle,
    *,
    folds: int = 5,
    seed: int = 0,
    measure: str = "energy",
    weights: Sequence[float] = DEFAULT_WEIGHTS,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, Any], Extracted, dict[str, np.ndarray]]:
    """Audit the examples with the bundle's backbone: (report, extracted, raw cues). The
    report's `examples` are sorted most suspicious first."""
    classes = sorted({e.label for e in examples})
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[e.label] for e in examples])
    if len(classes) < 2:
        raise ValueError("an audit needs at least two different labels")
    ex = extract(examples, bundle, progress=progress)
    empty = [index[c] for c in bundle.manifest.classifier.empty_classes if c in index]
    cues = audit(
        ex.features,
        ex.fmap,
        y,
        ex.masks,
        n_classes=len(classes),
        empty_classes=empty,
        folds=min(folds, len(examples)),
        seed=seed,
        measure=measure,
        weights=weights,
    )
    order = np.argsort(-cues["suspicion"], kind="stable")
    rows = [
        {
            "rank": r + 1,
            "file": str(examples[i].file),
            "label": examples[i].label,
            "suspicion": float(cues["suspicion"][i]),
            "looked_away": None
            if np.isnan(cues["looked_away"][i])
            else float(cues["looked_away"][i]),
            "p_label": float(cues["p_label"][i]),
            "predicted": classes[int(cues["predicted"][i])],
            "p_predicted": float(cues["p_predicted"][i]),
            "overmap_label": float(cues["overmap_label"][i]),
            "foreground": float(cues["foreground"][i]),
            "fold": int(cues["fold"][i]),
            "mask_source": ex.mask_source[i],
            "index": int(i),
        }
        for r, i in enumerate(order)
    ]
    report = {
        "n": len(examples),
        "classes": classes,
        "empty_classes": [classes[i] for i in empty],
        "folds": folds,
        "seed": seed,
        "measure": measure,
        "weights": {"p_label": float(weights[0]), "overmap_label": float(weights[1])},
        "rule": (
            "suspicion = (w_p * rank(1 - p_label) + w_o * rank(1 - overmap_label)) / (w_p + w_o),"
            " rank = percentile rank over all examples in [0, 1], ties averaged; for an empty"
            " class overmap_label = 1 - foreground"
        ),
        "looked_away_rule": (
            "among the examples whose out-of-fold head predicts their own label, the percentile"
            " rank of 1 - overmap_label (1 = the evidence lies furthest off the object); null"
            " where the head disagrees"
        ),
        "bundle": str(bundle.root),
        "examples": rows,
    }
    return report, ex, cues


def write_json(path: Path, report: dict[str, Any]) -> Path:
    path.write_text(json.dumps(report, indent=1), encoding="utf-8")
    return path


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>edge audit: {{ n_top }} suspects</title>
<style>
body{font-family:sans-serif;margin:1em;background:#fafafa}
.card{display:inline-block;vertical-align:top;width:460px;margin:6px;padding:6px;background:#fff;
border:1px solid #ccc}
.card img{width:448px;display:block}
table{border-collapse:collapse;font-size:13px}td{padding:1px 6px}
</style></head><body>
<h1>edge audit: the {{ n_top }} most suspicious of {{ n }} labels</h1>
<p>{{ rule }}. Heat: where the out-of-fold head's map for the <b>given</b> label looks; white
line: the object mask. Fix a wrong label in the CSV, or drop the example.</p>
{% for section in sections %}
<h2 id="{{ section.id }}">{{ section.title }}</h2>
{% for e in section.rows %}
<div class="card" id="{{ section.id }}-{{ e.rank }}">
<img src="data:image/jpeg;base64,{{ e.jpeg }}" alt="{{ e.file }}">
<table>
<tr><td>#{{ e.rank }}</td><td><code>{{ e.file }}</code></td></tr>
<tr><td>label</td><td><b>{{ e.label }}</b> (p {{ '%.3f' % e.p_label }})</td></tr>
<tr><td>model says</td><td>{{ e.predicted }} (p {{ '%.3f' % e.p_predicted }})</td></tr>
<tr><td>suspicion</td><td>{{ '%.3f' % e.suspicion }}</td></tr>
{% if e.looked_away is not none %}
<tr><td>looked away</td><td>{{ '%.3f' % e.looked_away }}</td></tr>{% endif %}
<tr><td>Over-MAP of label</td><td>{{ '%.3f' % e.overmap_label }}</td></tr>
<tr><td>foreground</td><td>{{ '%.3f' % e.foreground }} ({{ e.mask_source }})</td></tr>
</table></div>
{% endfor %}
{% endfor %}
</body></html>
"""


def suspect_picture(
    image: np.ndarray, cam: np.ndarray, mask: np.ndarray, bundle: Bundle, row: dict[str, Any]
) -> bytes:
    """JPEG bytes of edge.overlay's picture of one suspect: the given label's map and mask."""
    from edge.overlay import render

    rgb = render(
        image,
        cam,
        mask,
        bundle.manifest.classifier.input,
        label=f"label {row['label']} / model {row['predicted']}",
        scores={
            "susp": row["suspicion"],
            "p_label": row["p_label"],
            "overmap": row["overmap_label"],
        },
    )
    ok, data = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85]
    )
    if not ok:
        raise OSError(f"could not encode the picture of {row['file']}")
    return data.tobytes()


def write_html(
    path: Path,
    report: dict[str, Any],
    ex: Extracted,
    cues: dict[str, np.ndarray],
    bundle: Bundle,
    *,
    top: int = 50,
) -> Path:
    """The page: the `top` suspects, then the `top` labels the model agrees with whose map
    lies furthest off the object; each with its overlay embedded as a base64 JPEG."""
    import jinja2

    from edge.decode import load_image

    rows = report["examples"][:top]
    away = sorted(
        (r for r in report["examples"] if r["looked_away"] is not None),
        key=lambda r: -r["looked_away"],
    )[:top]
    pictures: dict[int, str] = {}

    def card(r: dict[str, Any]) -> dict[str, Any]:
        i = r["index"]
        if i not in pictures:
            jpeg = suspect_picture(load_image(r["file"]), cues["maps"][i], ex.masks[i], bundle, r)
            pictures[i] = base64.b64encode(jpeg).decode("ascii")
        return {**r, "jpeg": pictures[i]}

    sections = [
        {"id": "rank", "title": "Labels the model disagrees with", "rows": [card(r) for r in rows]},
        {
            "id": "away",
            "title": "Labels the model agrees with, learnt off the object (the map looks away)",
            "rows": [card(r) for r in away],
        },
    ]
    env = jinja2.Environment(autoescape=True)
    page = env.from_string(PAGE).render(
        n=report["n"], n_top=len(rows), rule=report["rule"], sections=sections
    )
    path.write_text(page, encoding="utf-8")
    return path
