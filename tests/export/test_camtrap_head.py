"""The default head's out-of-source measurement, on hand-made arrays where the answer is known."""

from __future__ import annotations

import numpy as np

from edge.categories import CATEGORIES
from export.camtrap_head import (
    EMPTY,
    empty_outcome,
    fit_head,
    leave_one_source_out,
    probs_of,
    safest_threshold,
)

ANIMAL = CATEGORIES.index("animal")


def _blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(CATEGORIES), n)
    X = rng.normal(size=(n, 8)) + 3 * np.eye(len(CATEGORIES), 8)[y]
    return X, y


def test_the_head_acts_on_raw_features_and_keeps_every_category() -> None:
    X, y = _blobs(400, 0)
    keep = y != CATEGORIES.index("vehicle")  # a training set without vehicles
    head = fit_head(X[keep], y[keep], C=1.0)
    assert head["weight"].shape == (len(CATEGORIES), 8)
    P = probs_of(head, X)
    assert np.allclose(P.sum(1), 1)
    assert P[:, CATEGORIES.index("vehicle")].max() < 1e-6  # never predicted, never NaN
    assert (P.argmax(1) == y)[keep].mean() > 0.9


def test_leave_one_source_out_never_scores_a_frame_with_a_head_that_saw_it() -> None:
    X, y = _blobs(300, 1)
    sources = np.array(["a"] * 150 + ["b"] * 150)
    X[sources == "b"] += 50  # source b lies far away: a head that saw it would be sure
    P = leave_one_source_out(X, y, sources, C=1.0)
    seen = probs_of(fit_head(X, y, C=1.0), X)
    b = sources == "b"
    assert (seen[b].argmax(1) == y[b]).mean() > 0.9
    assert (P[b].argmax(1) == y[b]).mean() < 0.9  # out of source it is worse, as it should be


def test_the_safest_threshold_is_set_by_the_worst_source() -> None:
    y = np.array([EMPTY, EMPTY, ANIMAL, ANIMAL, EMPTY, ANIMAL])
    P = np.zeros((6, len(CATEGORIES)))
    P[:, EMPTY] = [0.9, 0.8, 0.3, 0.2, 0.95, 0.93]  # source b's animal looks very empty
    P[:, ANIMAL] = 1 - P[:, EMPTY]
    sources = ["a", "a", "a", "a", "b", "b"]
    t = safest_threshold(P, y, sources, grid=[0.5, 0.7, 0.94, 0.96])
    assert t == 0.94
    r = empty_outcome(P, y, t_empty=t)
    assert r["non_empty_lost"] == 0 and r["empties_set_aside"] == 1
