"""The confidence the watcher acts on: softmax, Over-MAP and the segmenter's foreground, fused.

Three steps, each a plain function (see docs/fusion.md):

1. :func:`features` turns a batch's softmax, Over-MAP and foreground fraction into a small
   table [N, F] of cues, including *conflict* terms (the classifier says "empty" while the
   segmenter sees a large animal, or names an animal where the segmenter sees nothing).
2. :func:`fit_fusion` (at calibration time, needs scikit-learn) learns how the cues predict
   "the label is right" on labelled frames, and stores the result as plain JSON numbers. A
   guard keeps the fusion only if it ranks held-out frames better than softmax alone;
   otherwise it stores a softmax-only calibration. ``params["chosen"]`` says which.
3. :func:`apply_fusion` (on the device, numpy only) turns the cues into a probability that the
   label is right. With ``params=None`` it uses :data:`DEFAULT`: the max softmax, scaled down
   only where a foreground conflict exists, so without conflict evidence it ranks frames
   exactly as softmax does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from edge.overmap import entropy

FEATURES = (
    "max_softmax",  # top-1 probability
    "margin",  # top-1 minus top-2 probability
    "entropy",  # of the softmax, divided by log(C): 0 = certain, 1 = uniform
    "overmap",  # Over-MAP of the top class's map against the foreground
    "foreground",  # share of the frame the segmenter calls animal
    "conflict_empty",  # predicted empty while the foreground is large (0..1)
    "conflict_animal",  # predicted a non-empty class while almost nothing is foreground (0..1)
    "overmap_x_softmax",  # Over-MAP times max softmax
    # added later; params stored before carry their own (shorter) list in input_features
    "pred_empty",  # 1 if the top class is an "empty" class, else 0 (a per-class prior)
    "overmap_lift",  # Over-MAP minus the foreground share: its lift over a map spread evenly
    "overmap_animal",  # Over-MAP where an animal is predicted, 0 where "empty" is
    "foreground_empty",  # foreground share where "empty" is predicted, 0 elsewhere
)
LEGACY_FEATURES = FEATURES[:8]  # the cue table before pred_empty..foreground_empty
FG_HIGH = 0.05  # foreground share from which "empty" is fully in conflict
FG_LOW = 0.005  # foreground share under which an animal label is fully in conflict
DEFAULT_PENALTY = 0.5  # uncalibrated: full conflict halves the max softmax
DEFAULT: dict[str, Any] = {
    "kind": "default",
    "penalty": DEFAULT_PENALTY,
    "input_features": list(LEGACY_FEATURES),
}  # reads either table


def features(
    probs: Any,
    overmap: Any,
    foreground_fraction: Any,
    *,
    empty_index: int | Sequence[int] | None = None,
    fg_high: float = FG_HIGH,
    fg_low: float = FG_LOW,
) -> np.ndarray:
    """The cues for each frame, float64 [N, len(FEATURES)] in FEATURES order.

    probs: softmax [N, C] (rows sum to 1). overmap: [N] in [0, 1]. foreground_fraction: [N]
    in [0, 1]. empty_index: the class(es) meaning "empty"; without it the conflict terms are 0.
    fg_high/fg_low: the foreground shares at which each conflict is full; in between it grows
    linearly (an animal of 1 % of the frame is common in camera traps, so fg_low is small).
    """
    p = np.asarray(probs, np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"probs must be [N, C] with C >= 2, got shape {p.shape}")
    n, c = p.shape
    om = np.asarray(overmap, np.float64).reshape(-1)
    fg = np.asarray(foreground_fraction, np.float64).reshape(-1)
    if om.size != n or fg.size != n:
        raise ValueError(
            f"overmap ({om.size}) and foreground_fraction ({fg.size}) must have "
            f"one value per row of probs ({n})"
        )
    for name, a in (("probs", p), ("overmap", om), ("foreground_fraction", fg)):
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} contains NaN or infinity")
    if not 0 < fg_low < fg_high <= 1:
        raise ValueError("need 0 < fg_low < fg_high <= 1")
    top2 = np.sort(p, axis=1)[:, -2:]
    top1 = top2[:, 1]
    ent = entropy(p, axis=1, normalise=True)
    if empty_index is None:
        c_empty = c_animal = pred_empty = np.zeros(n)
    else:
        empties = np.atleast_1d(np.asarray(empty_index, int))
        if np.any((empties < 0) | (empties >= c)):
            raise ValueError(f"empty_index {empty_index} out of range for {c} classes")
        pred_empty = np.isin(p.argmax(1), empties)
        c_empty = pred_empty * np.clip(fg / fg_high, 0, 1)
        c_animal = ~pred_empty * np.clip(1 - fg / fg_low, 0, 1)
        pred_empty = pred_empty.astype(np.float64)
    return np.column_stack(
        [
            top1,
            top1 - top2[:, 0],
            ent,
            om,
            fg,
            c_empty,
            c_animal,
            om * top1,
            pred_empty,
            om - fg,
            om * (1 - pred_empty),
            fg * pred_empty,
        ]
    )


# ---- applying (device side, numpy only) ------------------------------------------------------


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -500, 500)))


def _columns(params: dict[str, Any], X: np.ndarray, names: Sequence[str]) -> np.ndarray:
    given = list(params.get("input_features", FEATURES))
    if X.ndim == 2 and X.shape[1] == len(FEATURES) and X.shape[1] != len(given):
        given = list(FEATURES)  # today's full cue table, read by name with older params
    if X.ndim != 2 or X.shape[1] != len(given):
        raise ValueError(f"X must be [N, {len(given)}] ({', '.join(given)}), got {X.shape}")
    missing = [f for f in names if f not in given]
    if missing:
        raise ValueError(f"the fusion needs features {missing}, X has {given}")
    return X[:, [given.index(f) for f in names]]


def apply_fusion(params: dict[str, Any] | None, X: Any) -> np.ndarray:
    """The fused confidence [N] in [0, 1] for cues X [N, F] from :func:`features`.

    params: what :func:`fit_fusion` returned (read back from JSON is fine), or None for
    :data:`DEFAULT`: ``max_softmax * (1 - penalty * max(conflict_empty, conflict_animal))``.
    """
    params = DEFAULT if params is None else params
    X = np.asarray(X, np.float64)
    kind = params.get("kind")
    if kind == "default":
        top1, c_empty, c_animal = _columns(
            params, X, ["max_softmax", "conflict_empty", "conflict_animal"]
        ).T
        return top1 * (1.0 - float(params["penalty"]) * np.maximum(c_empty, c_animal))
    if kind == "logistic":
        Z = (_columns(params, X, params["features"]) - np.asarray(params["mean"])) / np.asarray(
            params["scale"]
        )
        return _sigmoid(Z @ np.asarray(params["coef"], np.float64) + float(params["intercept"]))
    if kind == "isotonic":
        x = _columns(params, X, [params["features"][0]])[:, 0]
        xs, ys = np.asarray(params["x"], np.float64), np.asarray(params["y"], np.float64)
        return np.interp(x, xs, ys)
    raise ValueError(f"unknown fusion kind {kind!r} (expected default, logistic or isotonic)")


def check_fusion(params: dict[str, Any]) -> dict[str, Any]:
    """Raise ValueError unless `params` can be applied: run it on one row of cues of the width
    it reads, so a malformed bundle is refused when it loads, not with a KeyError on its
    first frame in the field. Returns params unchanged."""
    try:
        width = len(params.get("input_features", FEATURES))
        with np.errstate(all="ignore"):  # what it gives is checked below
            out = apply_fusion(params, np.zeros((1, width)))
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise ValueError(
            f"the fusion parameters cannot be applied ({type(e).__name__}: {e})"
        ) from None
    if out.shape != (1,) or not np.all(np.isfinite(out)):
        raise ValueError("the fusion parameters give no finite confidence")
    return params


# ---- fitting (calibration time, needs scikit-learn) -----------------------------------------


def _fit_logistic(X: np.ndarray, y: np.ndarray, names: list[str], C: float) -> dict[str, Any]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(X)
    model = LogisticRegression(C=C, max_iter=5000).fit(scaler.transform(X), y)
    return {
        "kind": "logistic",
        "features": names,
        "mean": scaler.mean_.tolist(),
        "scale": scaler.scale_.tolist(),
        "coef": model.coef_[0].tolist(),
        "intercept": float(model.intercept_[0]),
    }


def _fit_isotonic(x: np.ndarray, y: np.ndarray, name: str) -> dict[str, Any]:
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
    iso.fit(x, y)
    return {
        "kind": "isotonic",
        "features": [name],
        "x": iso.X_thresholds_.tolist(),
        "y": iso.y_thresholds_.tolist(),
    }


def _fit(
    method: str, X: np.ndarray, y: np.ndarray, names: list[str], score: str, C: float
) -> dict[str, Any]:
    if method == "logistic":
        return _fit_logistic(X, y, names, C)
    return _fit_isotonic(X[:, names.index(score)], y, score)


def fit_fusion(
    X: Any,
    correct: Any,
    *,
    method: str = "logistic",
    feature_names: Sequence[str] = FEATURES,
    use: Sequence[str] | None = None,
    score: str = "max_softmax",
    C: float = 1.0,
    guard: bool = True,
    folds: int = 5,
    min_gain: float = 0.005,
    seed: int = 0,
    shuffle: bool = False,
) -> dict[str, Any]:
    """Learn P(label right | cues) from labelled frames; JSON-ready params for apply_fusion.

    X: [N, F] cues (columns named by feature_names, FEATURES by default). correct: [N] bool.
    method: "logistic" (standardised logistic regression on the `use` columns, all by default)
        or "isotonic" (a monotone map of the single column `score`).
    guard: compare, on the same stratified folds, the held-out AUROC of this fusion with that of
        max softmax alone; keep the fusion only if its mean gain, less one standard error of
        the per-fold gains, exceeds min_gain (a gain smaller than the folds' scatter is noise:
        on 210 Pet frames with 30 errors a +0.012 mean gain, se 0.014, turned into a 0.02 loss
        on the test split), else fall back to Platt scaling of max softmax (a monotone map, so
        it ranks frames exactly as softmax does). params["chosen"] is "fusion" or "softmax";
        params["cv"] holds both AUROCs (mean over folds), the per-fold gains and the fold count.
    shuffle: shuffle before cutting the folds (with `seed`). Off by default: frames of a camera
        come in bursts, and shuffled folds put near-twins on both sides, which flatters a fusion
        that memorises a burst (MLWIC 600:900, dominated by one unseen species, showed it).
        Unshuffled stratified folds are contiguous stretches of time, a harder, fairer test.
    """
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    X = np.asarray(X, np.float64)
    y = np.asarray(correct).astype(bool).ravel()
    names = list(feature_names)
    if X.ndim != 2 or X.shape != (y.size, len(names)):
        raise ValueError(f"X must be [N, {len(names)}] with one row per label, got {X.shape}")
    if not np.all(np.isfinite(X)):
        raise ValueError("X contains NaN or infinity")
    if y.all() or not y.any():
        raise ValueError("need both right and wrong frames to fit a fusion")
    if method not in ("logistic", "isotonic"):
        raise ValueError(f"method must be 'logistic' or 'isotonic', got {method!r}")
    if "max_softmax" not in names:
        raise ValueError("the cues must include max_softmax (the fallback and the guard use it)")
    cols = list(use) if use is not None else names
    sub = X[:, [names.index(f) for f in cols]]
    yi = y.astype(int)

    params = _fit(method, sub, yi, cols, score, C)
    chosen, cv = "fusion", None
    n_splits = int(min(folds, np.bincount(yi).min()))
    if guard and n_splits >= 2:
        soft = X[:, names.index("max_softmax")]
        fused_scores, soft_scores = [], []
        for tr, te in StratifiedKFold(
            n_splits, shuffle=shuffle, random_state=seed if shuffle else None
        ).split(X, yi):
            if yi[te].min() == yi[te].max():
                continue
            p = apply_fusion(
                {**_fit(method, sub[tr], yi[tr], cols, score, C), "input_features": cols}, sub[te]
            )
            fused_scores.append(roc_auc_score(yi[te], p))
            soft_scores.append(roc_auc_score(yi[te], soft[te]))
        gains = np.subtract(fused_scores, soft_scores)
        se = float(gains.std(ddof=1) / math.sqrt(gains.size)) if gains.size > 1 else math.inf
        cv = {
            "folds": n_splits,
            "shuffled": shuffle,
            "fusion_auroc": float(np.mean(fused_scores)),
            "softmax_auroc": float(np.mean(soft_scores)),
            "min_gain": min_gain,
            "fold_gains": gains.round(6).tolist(),
            "gain_se": se,
        }
        # one-standard-error rule: the gain must stand clear of the folds' own scatter
        if not float(gains.mean()) - se > min_gain:
            chosen = "softmax"
            params = _fit_logistic(X[:, [names.index("max_softmax")]], yi, ["max_softmax"], C)
    return {
        **params,
        "input_features": names,
        "method": method,
        "chosen": chosen,
        "cv": cv,
        "n": int(y.size),
        "accuracy": float(y.mean()),
    }
