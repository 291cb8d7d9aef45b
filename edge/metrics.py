"""How well a confidence score separates right from wrong labels: the figures we report.

Every function takes a confidence ``s`` (higher = more trusted; any real scale unless said) and
``correct`` (bool: was the label right), one value per frame, and returns plain floats or
numpy arrays. Conventions:

- "Correct" is the positive class (AUROC, FPR at 95 % TPR), as in the misclassification
  detection literature (Hendrycks & Gimpel 2017): a good score puts right frames high.
- A figure that is undefined on the data (AUROC when every label is right or every label is
  wrong; review capture when there are no errors) is ``nan``, never a made-up 0.5 or 1.0.
- Ties in ``s`` count as ties: AUROC gives a tied (right, wrong) pair one half; the
  risk-coverage curve only has points at distinct score values (a threshold cannot accept half
  of a tie); review capture counts the tie at the budget's edge pro rata (the expected value
  under random tie-breaking).
- Non-finite scores are refused with ``ValueError``.

scikit-learn (``roc_auc_score``, ``roc_curve``) and matplotlib are imported inside the
functions that use them: they are needed for evaluation, not to run the watcher.

Example:
    >>> s = np.array([0.9, 0.8, 0.3, 0.2]); c = np.array([True, True, False, False])
    >>> auroc(s, c), eaurc(s, c)
    (1.0, 0.0)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _check(s: Any, correct: Any) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(s, dtype=np.float64).ravel()
    c = np.asarray(correct).ravel()
    if s.shape != c.shape:
        raise ValueError(f"scores ({s.size}) and correct ({c.size}) differ in length")
    if s.size == 0:
        raise ValueError("no frames: scores and correct are empty")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or infinity; fix the score before measuring it")
    if c.dtype != bool:
        if not np.all(np.isin(c, (0, 1))):
            raise ValueError("correct must be booleans (or 0/1)")
        c = c.astype(bool)
    return s, c


def auroc(s: Any, correct: Any) -> float:
    """Area under the ROC curve, correct frames as positives: the chance that a random right
    frame scores above a random wrong one (ties count 1/2). nan if one kind is absent."""
    s, c = _check(s, correct)
    if c.all() or not c.any():
        return math.nan
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(c, s))


def risk_coverage(s: Any, correct: Any) -> tuple[np.ndarray, np.ndarray]:
    """The risk-coverage curve: accept frames from the most trusted down; at each distinct
    score, coverage = share of frames accepted, risk = error rate among them.

    Returns (coverage, risk), coverage increasing to 1.0.
    """
    s, c = _check(s, correct)
    order = np.argsort(-s, kind="stable")
    s_sorted, err = s[order], ~c[order]
    errors = np.cumsum(err)
    # the last index of each run of equal scores: a threshold accepts whole ties
    ends = np.flatnonzero(np.r_[s_sorted[1:] != s_sorted[:-1], True])
    k = ends + 1
    return k / s.size, errors[ends] / k


def aurc(s: Any, correct: Any) -> float:
    """Area under the risk-coverage curve (Geifman et al. 2019), lower is better.

    A step (right Riemann) sum over the curve's points; without ties it is the mean of the
    selective risk after each accepted frame.
    """
    coverage, risk = risk_coverage(s, correct)
    widths = np.diff(np.r_[0.0, coverage])
    return float(np.sum(widths * risk))


def optimal_aurc(n: int, n_errors: int) -> float:
    """AURC of a perfect ranking (every error below every right frame) with the same counts."""
    if not 0 <= n_errors <= n or n < 1:
        raise ValueError(f"need 0 <= n_errors <= n and n >= 1, got {n_errors}, {n}")
    k = np.arange(n - n_errors + 1, n + 1)
    return float(np.sum((k - (n - n_errors)) / k) / n)


def eaurc(s: Any, correct: Any) -> float:
    """Excess AURC: AURC minus the optimal AURC at the same error rate. 0 = perfect ranking;
    it removes the part of AURC that only reflects how often the classifier is wrong."""
    s, c = _check(s, correct)
    return aurc(s, c) - optimal_aurc(s.size, int((~c).sum()))


def fpr_at_tpr(s: Any, correct: Any, tpr: float = 0.95) -> float:
    """Share of wrong frames still accepted at the highest threshold that keeps at least `tpr`
    of the right frames. nan if one kind is absent."""
    s, c = _check(s, correct)
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"tpr must be in (0, 1], got {tpr}")
    if c.all() or not c.any():
        return math.nan
    from sklearn.metrics import roc_curve

    fpr, tprs, _ = roc_curve(c, s, drop_intermediate=False)
    return float(fpr[np.argmax(tprs >= tpr - 1e-12)])


def ece(p: Any, correct: Any, bins: int = 15) -> tuple[float, dict[str, np.ndarray]]:
    """Expected calibration error of probabilities `p` in [0, 1] (equal-width bins).

    Returns (ece, table): table has per bin "lower", "upper", "count", "confidence" (mean p)
    and "accuracy" (share correct); empty bins have nan confidence and accuracy. Bins are
    (lower, upper], the first one also holds 0.
    """
    p, c = _check(p, correct)
    if p.min() < 0.0 or p.max() > 1.0:
        raise ValueError("ece needs probabilities in [0, 1]; calibrate the score first")
    if bins < 1:
        raise ValueError("bins must be >= 1")
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.searchsorted(edges, p, side="left") - 1, 0, bins - 1)
    count = np.bincount(idx, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(idx, weights=p, minlength=bins) / count
        acc = np.bincount(idx, weights=c.astype(float), minlength=bins) / count
    filled = count > 0
    value = float(np.sum(count[filled] / p.size * np.abs(acc[filled] - conf[filled])))
    table = {
        "lower": edges[:-1],
        "upper": edges[1:],
        "count": count,
        "confidence": conf,
        "accuracy": acc,
    }
    return value, table


def review_capture(s: Any, correct: Any, budget: float = 0.1) -> float:
    """Share of all errors found when a person reviews the `budget` share of frames with the
    lowest confidence: the triage figure (review 10 % of frames, catch how many mistakes?).

    The number reviewed is round(budget * N). nan when there are no errors.
    """
    s, c = _check(s, correct)
    if not 0.0 <= budget <= 1.0:
        raise ValueError(f"budget must be in [0, 1], got {budget}")
    n_err = int((~c).sum())
    if n_err == 0:
        return math.nan
    k = int(round(budget * s.size))
    if k == 0:
        return 0.0
    edge = np.sort(s)[k - 1]
    below = s < edge
    tied = s == edge
    take = (k - below.sum()) / tied.sum()  # the tie at the edge, pro rata
    caught = (~c & below).sum() + take * (~c & tied).sum()
    return float(caught / n_err)


def summarise(
    confidences: Mapping[str, Any],
    correct: Any,
    *,
    budget: float = 0.1,
    tpr: float = 0.95,
    bins: int = 15,
) -> dict[str, dict[str, float]]:
    """All figures for each named confidence on the same frames.

    Per name: n, accuracy, auroc, aurc, eaurc, fpr_at_{tpr}, review_capture_{budget}, and ece
    when every value is in [0, 1] (else nan: ECE needs probabilities).
    """
    out: dict[str, dict[str, float]] = {}
    for name, s in confidences.items():
        s, c = _check(s, correct)
        in_unit = bool(s.min() >= 0.0 and s.max() <= 1.0)
        out[name] = {
            "n": float(s.size),
            "accuracy": float(c.mean()),
            "auroc": auroc(s, c),
            "aurc": aurc(s, c),
            "eaurc": eaurc(s, c),
            f"fpr_at_{tpr:g}": fpr_at_tpr(s, c, tpr),
            f"review_capture_{budget:g}": review_capture(s, c, budget),
            "ece": ece(s, c, bins)[0] if in_unit else math.nan,
        }
    return out


def wilson_interval(k: int, n: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial share k/n: unlike the normal one it stays inside
    [0, 1] and is sensible at k = 0 or k = n and for small n. (nan, nan) when n = 0."""
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got {k}, {n}")
    if n == 0:
        return math.nan, math.nan
    z = _z(confidence)
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # rounding can put an edge a hair past k/n at k = 0 or k = n
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


def _z(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + confidence / 2)


def overlap_accuracy(
    overmap: Any, correct: Any, *, bins: int = 10, confidence: float = 0.95
) -> list[dict[str, float]]:
    """Accuracy per quantile bin of Over-MAP (deciles by default): the direct test of "the
    label is more often right the more the map overlaps the animal".

    Bin edges are the quantiles of `overmap`; bin k holds the values in (lower, upper], the
    first one also its lower edge, so equal values always share a bin and a bin never splits a
    tie. Heavy ties make edges coincide: the bins between them stay empty (count 0, nan
    accuracy and interval) rather than being split at random. Per bin: "bin" (0-based),
    "lower", "upper", "centre" (mean Over-MAP of its frames), "count", "correct", "accuracy",
    and the Wilson interval "low", "high". No frames: an empty list.

    Example:
        >>> b = overlap_accuracy([0.1, 0.2, 0.8, 0.9], [False, False, True, True], bins=2)
        >>> [(x["count"], x["accuracy"]) for x in b]
        [(2, 0.0), (2, 1.0)]
    """
    if bins < 1:
        raise ValueError("bins must be >= 1")
    if np.asarray(overmap).size == 0 and np.asarray(correct).size == 0:
        return []
    s, c = _check(overmap, correct)
    edges = np.quantile(s, np.linspace(0.0, 1.0, bins + 1))
    edges[0], edges[-1] = s.min(), s.max()  # exact, whatever the interpolation
    idx = np.clip(np.searchsorted(edges[1:-1], s, side="left"), 0, bins - 1)
    out = []
    for k in range(bins):
        inside = idx == k
        n, right = int(inside.sum()), int(c[inside].sum())
        low, high = wilson_interval(right, n, confidence=confidence)
        out.append(
            {
                "bin": k,
                "lower": float(edges[k]),
                "upper": float(edges[k + 1]),
                "centre": float(s[inside].mean()) if n else math.nan,
                "count": n,
                "correct": right,
                "accuracy": right / n if n else math.nan,
                "low": low,
                "high": high,
            }
        )
    return out


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties given their mean rank (as Spearman's rho needs)."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(x.size)
    ranks[order] = np.arange(1, x.size + 1)
    for v in np.unique(x):
        tied = x == v
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(x: Any, y: Any) -> float:
    """Spearman's rank correlation (ties at their mean rank); nan when either side is constant
    or there are fewer than two points."""
    x = np.asarray(x, np.float64).ravel()
    y = np.asarray(y, np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x ({x.size}) and y ({y.size}) differ in length")
    if x.size < 2:
        return math.nan
    rx, ry = _ranks(x), _ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = math.sqrt(float((rx * rx).sum() * (ry * ry).sum()))
    return float((rx * ry).sum() / denom) if denom > 0 else math.nan


def overlap_trend(curve: Sequence[Mapping[str, Any]], *, confidence: float = 0.95) -> dict:
    """Is the curve of `overlap_accuracy` rising? Over its non-empty bins: Spearman's rho of
    bin centre against accuracy ("spearman"; +1 = accuracy rises with every decile), and the
    top bin's accuracy minus the bottom one's ("top_minus_bottom") with Newcombe's interval
    for a difference of two independent shares built from their Wilson intervals ("low",
    "high"; an interval clear of 0 is a difference the counts support). "bins" counts the
    non-empty bins; figures that need two of them are nan with fewer.

    Example:
        >>> curve = overlap_accuracy([0.1, 0.2, 0.8, 0.9], [False, False, True, True], bins=2)
        >>> overlap_trend(curve)["spearman"], overlap_trend(curve)["top_minus_bottom"]
        (1.0, 1.0)
    """
    filled = [b for b in curve if b["count"] > 0]
    out: dict[str, float] = {
        "bins": len(filled),
        "spearman": math.nan,
        "top_minus_bottom": math.nan,
        "low": math.nan,
        "high": math.nan,
    }
    if len(filled) < 2:
        return out
    out["spearman"] = spearman([b["centre"] for b in filled], [b["accuracy"] for b in filled])
    top, bottom = filled[-1], filled[0]
    l1, u1 = wilson_interval(top["correct"], top["count"], confidence=confidence)
    l2, u2 = wilson_interval(bottom["correct"], bottom["count"], confidence=confidence)
    p1, p2 = top["accuracy"], bottom["accuracy"]
    d = p1 - p2
    out["top_minus_bottom"] = d
    out["low"] = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    out["high"] = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return out


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt: Any, fig: Any, path: Path | str) -> Path:
    """Write a figure as a PNG at `path` and free it."""
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_reliability(
    p: Any, correct: Any, path: Path, *, bins: int = 15, title: str = "reliability"
) -> Path:
    """A reliability diagram (accuracy per confidence bin against the diagonal) as a PNG."""
    value, table = ece(p, correct, bins)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    width = table["upper"] - table["lower"]
    filled = table["count"] > 0
    ax.bar(
        table["lower"][filled],
        table["accuracy"][filled],
        width=width[filled],
        align="edge",
        edgecolor="black",
        alpha=0.7,
        label="accuracy",
    )
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfectly calibrated")
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1),
        xlabel="confidence",
        ylabel="accuracy",
        title=f"{title} (ECE {value:.3f})",
    )
    ax.legend(loc="upper left")
    return _save(plt, fig, path)


def plot_risk_coverage(
    confidences: Mapping[str, Any], correct: Any, path: Path, *, title: str = "risk-coverage"
) -> Path:
    """Risk-coverage curves of several confidences on the same frames as a PNG."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for name, s in confidences.items():
        coverage, risk = risk_coverage(s, correct)
        ax.step(coverage, risk, where="post", label=f"{name} (AURC {aurc(s, correct):.3f})")
    ax.set(
        xlim=(0, 1),
        ylim=(0, None),
        xlabel="coverage (share of frames accepted)",
        ylabel="risk (error rate among accepted)",
        title=title,
    )
    ax.legend(loc="upper left")
    return _save(plt, fig, path)


def plot_overlap_accuracy(
    curves: Mapping[str, Sequence[Mapping[str, Any]]],
    path: Path,
    *,
    title: str = "accuracy by Over-MAP decile",
) -> Path:
    """Curves of `overlap_accuracy` (name -> bins) as a PNG: accuracy per Over-MAP bin with
    its Wilson interval as error bars; empty bins are left out."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    names = list(curves)
    for j, name in enumerate(names):
        filled = [b for b in curves[name] if b["count"] > 0]
        if not filled:
            continue
        x = np.array([b["bin"] + 1 for b in filled], float) + 0.12 * (j - (len(names) - 1) / 2)
        acc = np.array([b["accuracy"] for b in filled])
        err = np.array(
            [
                [a - b["low"] for a, b in zip(acc, filled, strict=True)],
                [b["high"] - a for a, b in zip(acc, filled, strict=True)],
            ]
        )
        rho = overlap_trend(filled)["spearman"]
        n = sum(b["count"] for b in filled)
        ax.errorbar(x, acc, yerr=err, marker="o", capsize=3, label=f"{name} (n={n}, rho {rho:.2f})")
    bins = max((len(c) for c in curves.values()), default=10)
    ax.set(
        xlim=(0.5, bins + 0.5),
        ylim=(0, 1.02),
        xticks=range(1, bins + 1),
        xlabel="Over-MAP bin (quantiles, lowest overlap first)",
        ylabel="accuracy (95 % Wilson interval)",
        title=title,
    )
    ax.legend(loc="best")
    return _save(plt, fig, path)
