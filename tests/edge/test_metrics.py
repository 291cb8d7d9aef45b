"""Metrics on hand-made inputs whose answers are known, and cross-checks by direct counting."""

from __future__ import annotations

import math
from itertools import product

import numpy as np
import pytest

from edge import metrics as m


def _auroc_by_pairs(s: np.ndarray, c: np.ndarray) -> float:
    pos, neg = s[c], s[~c]
    wins = sum((a > b) + 0.5 * (a == b) for a, b in product(pos, neg))
    return wins / (len(pos) * len(neg))


def _aurc_by_steps(s: np.ndarray, c: np.ndarray) -> float:
    # no ties: the mean of the selective risk after each accepted frame
    order = np.argsort(-s)
    err = ~c[order]
    return float(np.mean([err[: k + 1].mean() for k in range(len(s))]))


def test_perfect_ranking() -> None:
    s = np.array([0.9, 0.8, 0.7, 0.3, 0.2])
    c = np.array([True, True, True, False, False])
    assert m.auroc(s, c) == 1.0
    assert m.eaurc(s, c) == pytest.approx(0.0, abs=1e-15)
    assert m.fpr_at_tpr(s, c) == 0.0
    assert m.review_capture(s, c, budget=0.4) == 1.0


def test_reversed_ranking() -> None:
    s = np.array([0.9, 0.8, 0.3, 0.2])
    c = np.array([False, False, True, True])
    assert m.auroc(s, c) == 0.0
    assert m.fpr_at_tpr(s, c) == 1.0
    assert m.review_capture(s, c, budget=0.5) == 0.0
    # worst AURC: risk 1, 1, 2/3, 1/2 -> mean
    assert m.aurc(s, c) == pytest.approx((1 + 1 + 2 / 3 + 1 / 2) / 4)


def test_ties_count_half() -> None:
    s = np.ones(4)
    c = np.array([True, False, True, False])
    assert m.auroc(s, c) == 0.5
    cov, risk = m.risk_coverage(s, c)
    assert cov.tolist() == [1.0] and risk.tolist() == [0.5]  # a tie is accepted whole
    assert m.review_capture(s, c, budget=0.5) == pytest.approx(0.5)  # pro rata at the edge


def test_undefined_is_nan() -> None:
    s = np.array([0.1, 0.5, 0.9])
    every = np.ones(3, bool)
    assert math.isnan(m.auroc(s, every))
    assert math.isnan(m.auroc(s, ~every))
    assert math.isnan(m.fpr_at_tpr(s, every))
    assert math.isnan(m.review_capture(s, every))
    assert m.eaurc(s, every) == 0.0 and m.aurc(s, every) == 0.0


def test_cross_check_random_against_direct_counting() -> None:
    rng = np.random.default_rng(0)
    c = rng.random(60) < 0.7
    s = rng.random(60) + 0.5 * c
    assert m.auroc(s, c) == pytest.approx(_auroc_by_pairs(s, c), abs=1e-12)
    assert m.aurc(s, c) == pytest.approx(_aurc_by_steps(s, c), abs=1e-12)
    # rounded scores make ties: AUROC still matches the pair count with halves
    r = np.round(s, 1)
    assert m.auroc(r, c) == pytest.approx(_auroc_by_pairs(r, c), abs=1e-12)


def test_optimal_aurc_matches_perfect_ranking_and_geifman_limit() -> None:
    n, e = 1000, 200
    s = np.r_[np.linspace(2, 1, n - e), np.linspace(0.9, 0, e)]
    c = np.r_[np.ones(n - e, bool), np.zeros(e, bool)]
    assert m.aurc(s, c) == pytest.approx(m.optimal_aurc(n, e), abs=1e-12)
    r = e / n
    assert m.optimal_aurc(n, e) == pytest.approx(r + (1 - r) * math.log(1 - r), abs=1e-3)


def test_fpr_at_tpr_by_hand() -> None:
    # 4 right frames, 4 wrong; keeping 3/4 of right ones (tpr 0.75) needs threshold 0.6,
    # which still accepts the wrong one at 0.7
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
    c = np.array([True, True, False, True, True, False, False, False])
    assert m.fpr_at_tpr(s, c, tpr=0.75) == 0.25
    assert m.fpr_at_tpr(s, c, tpr=1.0) == 0.25
    assert m.fpr_at_tpr(s, c, tpr=0.5) == 0.0


def test_ece_by_hand() -> None:
    p = np.array([0.95, 0.95, 0.95, 0.95, 0.55, 0.55])
    c = np.array([True, True, True, False, True, False])
    value, table = m.ece(p, c, bins=10)
    # bin (0.9,1]: conf .95 acc .75 (4 frames); bin (0.5,0.6]: conf .55 acc .5 (2 frames)
    assert value == pytest.approx(4 / 6 * 0.2 + 2 / 6 * 0.05)
    assert table["count"].tolist() == [0, 0, 0, 0, 0, 2, 0, 0, 0, 4]
    assert np.isnan(table["accuracy"][0])
    perfect = np.array([1.0, 1.0, 0.0, 0.0])
    assert m.ece(perfect, perfect.astype(bool))[0] == 0.0
    with pytest.raises(ValueError, match="probabilities"):
        m.ece(np.array([1.5]), np.array([True]))


def test_review_capture_lowest_budget() -> None:
    s = np.arange(10, dtype=float)  # frame i has confidence i
    c = np.ones(10, bool)
    c[[0, 5]] = False  # one error at the bottom, one in the middle
    assert m.review_capture(s, c, budget=0.1) == 0.5
    assert m.review_capture(s, c, budget=0.6) == 1.0
    assert m.review_capture(s, c, budget=0.0) == 0.0


def test_inputs_checked() -> None:
    with pytest.raises(ValueError, match="length"):
        m.auroc([0.1, 0.2], [True])
    with pytest.raises(ValueError, match="NaN"):
        m.aurc([np.nan, 0.2], [True, False])
    with pytest.raises(ValueError, match="booleans"):
        m.aurc([0.1, 0.2], [2, 0])


def test_summarise_and_plots(tmp_path) -> None:
    rng = np.random.default_rng(1)
    c = rng.random(200) < 0.8
    good = np.clip(0.6 + 0.3 * c + 0.1 * rng.standard_normal(200), 0, 1)
    noise = rng.random(200)
    fig = m.summarise({"good": good, "noise": noise, "logit": 5 * good - 2}, c)
    assert fig["good"]["auroc"] > 0.9 > 0.65 > fig["noise"]["auroc"]
    assert fig["good"]["review_capture_0.1"] > fig["noise"]["review_capture_0.1"]
    assert fig["good"]["accuracy"] == pytest.approx(c.mean())
    assert math.isnan(fig["logit"]["ece"]) and fig["logit"]["auroc"] == fig["good"]["auroc"]
    png1 = m.plot_reliability(good, c, tmp_path / "rel.png")
    png2 = m.plot_risk_coverage({"good": good, "noise": noise}, c, tmp_path / "rc.png")
    for png in (png1, png2):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
