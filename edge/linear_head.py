"""A linear head on the frozen backbone's pooled features, fitted and applied with numpy.

The classifier graph of a learnable bundle returns `features` [N,K] (the pooled backbone
vector) and `fmap` [N,K,h,w] (the map's layer A) besides its own logits. A head is then just
`weight` [C,K] and `bias` [C]: logits = features @ weight.T + bias, and its Grad-CAM at A is
ReLU(sum_k weight[c,k] * A_k) / (h*w), exactly what the graph computes for its own linear head
(export/cam.py). So the device can learn a new head from a person's answers in seconds, with
no torch and no re-export, and both sides fit heads with this one function.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge.categories import CATEGORIES

HEAD_FILE = "head.npz"
ABSENT_BIAS = -30.0  # the bias of a class the training set lacks: never predicted


def fit_head(
    X: Any,
    y: Any,
    *,
    C: float = 0.1,
    seed: int = 0,
    n_classes: int = len(CATEGORIES),
    sample_weight: Any = None,
) -> dict[str, Any]:
    """Multinomial logistic regression on standardised X with balanced class weights.

    X: features [N,F]. y: class indices [N] in 0..n_classes-1. sample_weight: [N] or None
    (answers from this camera may weigh more than the generic first labels).
    Returns {"weight" [n_classes,F] float32, "bias" [n_classes] float32, "C"}: the
    standardisation is folded in, so the head acts on raw X as a plain Linear(F, n_classes).
    Every class is present in the output, even one the training set lacks (its bias is
    ABSENT_BIAS, so it is never predicted).

    >>> head = fit_head(np.eye(4)[[0, 1, 0, 1]] + 0.1, np.array([0, 1, 0, 1]), n_classes=3)
    >>> head["weight"].shape
    (3, 4)
    """
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    X = np.asarray(X, np.float64)
    y = np.asarray(y).astype(int).ravel()
    if X.ndim != 2 or X.shape[0] != y.size:
        raise ValueError(f"X must be [N, F] with one row per label, got {X.shape} for {y.size}")
    if y.size == 0 or y.min() < 0 or y.max() >= n_classes:
        raise ValueError(f"y must hold class indices 0..{n_classes - 1}")
    if np.unique(y).size < 2:
        raise ValueError("need at least two classes among the labels to fit a head")
    mean, scale = X.mean(0), X.std(0)
    scale[scale < 1e-8] = 1.0
    Z = (X - mean) / scale
    with threadpool_limits(1):
        m = LogisticRegression(C=C, class_weight="balanced", max_iter=3000, random_state=seed).fit(
            Z, y, sample_weight=sample_weight
        )
    weight = np.zeros((n_classes, X.shape[1]))
    bias = np.full(n_classes, ABSENT_BIAS)
    coef, inter = m.coef_, m.intercept_
    if coef.shape[0] == 1:  # binary: one row in sklearn, softmax over [-z/2, z/2] is the same
        coef, inter = np.vstack([-coef / 2, coef / 2]), np.array([-inter[0] / 2, inter[0] / 2])
    weight[m.classes_] = coef / scale
    bias[m.classes_] = inter - (coef / scale) @ mean
    return {"weight": weight.astype(np.float32), "bias": bias.astype(np.float32), "C": C}


def head_logits(weight: np.ndarray, bias: np.ndarray, features: np.ndarray) -> np.ndarray:
    """logits [N,C] float32 = features [N,K] @ weight.T + bias."""
    f = np.asarray(features, np.float32)
    return f @ np.asarray(weight, np.float32).T + np.asarray(bias, np.float32)


def head_cam(weight: np.ndarray, fmap: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """The Grad-CAM [N,h,w] of class classes[i] for each frame i: the class activation map
    ReLU(sum_k weight[c,k] * fmap[i,k]) / (h*w), as the graph computes it for a linear head."""
    a = np.asarray(fmap, np.float32)
    if a.ndim != 4:
        raise ValueError(f"fmap must be [N, K, h, w], got shape {a.shape}")
    w = np.asarray(weight, np.float32)[np.asarray(classes, int)]  # [N,K]
    cam = np.einsum("nk,nkhw->nhw", w, a) / (a.shape[2] * a.shape[3])
    return np.maximum(cam, 0.0)


def apply_head(
    weight: np.ndarray, bias: np.ndarray, features: np.ndarray, fmap: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(logits [N,C], cam [N,h,w] of each frame's top class) for a head on the backbone."""
    logits = head_logits(weight, bias, features)
    return logits, head_cam(weight, fmap, logits.argmax(1))


def save_head(path: Path, weight: np.ndarray, bias: np.ndarray) -> Path:
    """Write `weight` [C,K] and `bias` [C] (float32) to an .npz file."""
    w, b = np.asarray(weight, np.float32), np.asarray(bias, np.float32)
    if w.ndim != 2 or b.shape != (w.shape[0],):
        raise ValueError(f"weight must be [C, K] and bias [C], got {w.shape} and {b.shape}")
    with open(path, "wb") as f:
        np.savez(f, weight=w, bias=b)
    return Path(path)


def load_head(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(weight [C,K], bias [C]) from a head file; ValueError naming the file when malformed."""
    with np.load(path, allow_pickle=False) as z:
        if "weight" not in z or "bias" not in z:
            raise ValueError(f"{path}: a head file holds 'weight' and 'bias', found {z.files}")
        w, b = z["weight"].astype(np.float32), z["bias"].astype(np.float32)
    if w.ndim != 2 or b.shape != (w.shape[0],):
        raise ValueError(f"{path}: weight {w.shape} and bias {b.shape} are not [C, K] and [C]")
    return w, b
