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


def test_wilson_interval_known_values() -> None:
    # textbook values (Newcombe 1998, table I): 0/10 and 5/10 at 95 %
    assert m.wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert m.wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert m.wilson_interval(10, 10)[1] == 1.0
    assert all(math.isnan(v) for v in m.wilson_interval(0, 0))
    lo90, hi90 = m.wilson_interval(5, 10, confidence=0.9)
    assert 0.2366 < lo90 < hi90 < 0.7634  # a lower level, a narrower interval
    with pytest.raises(ValueError):
        m.wilson_interval(3, 2)


def test_overlap_accuracy_monotone_case() -> None:
    # 100 frames, Over-MAP 0.00..0.99; in decile k exactly k of its 10 frames are right
    s = np.arange(100) / 100
    c = np.array([j % 10 < j // 10 for j in range(100)])
    curve = m.overlap_accuracy(s, c)
    assert [b["count"] for b in curve] == [10] * 10
    assert [b["correct"] for b in curve] == list(range(10))
    assert [b["accuracy"] for b in curve] == pytest.approx([k / 10 for k in range(10)])
    for k, b in enumerate(curve):
        assert b["lower"] <= b["centre"] <= b["upper"]
        assert b["centre"] == pytest.approx(s[10 * k : 10 * k + 10].mean())
        assert (b["low"], b["high"]) == pytest.approx(m.wilson_interval(k, 10))
    trend = m.overlap_trend(curve)
    assert trend["bins"] == 10 and trend["spearman"] == pytest.approx(1.0)
    assert trend["top_minus_bottom"] == pytest.approx(0.9)
    assert 0.0 < trend["low"] < 0.9 < trend["high"] <= 1.0  # clear of 0 with 10 per bin
    # reversed overlap: the same bins in the other order, rho -1
    back = m.overlap_trend(m.overlap_accuracy(1 - s, c))
    assert back["spearman"] == pytest.approx(-1.0) and back["top_minus_bottom"] == -0.9


def test_overlap_accuracy_flat_case_and_spearman_cross_check() -> None:
    from scipy.stats import spearmanr

    # every decile 7 of 10 right: no trend, and the difference's interval straddles 0
    s = np.linspace(0, 1, 100)
    c = np.array([j % 10 < 7 for j in range(100)])
    curve = m.overlap_accuracy(s, c)
    assert [b["accuracy"] for b in curve] == pytest.approx([0.7] * 10)
    trend = m.overlap_trend(curve)
    assert math.isnan(trend["spearman"])  # constant accuracy: no rank correlation
    assert trend["top_minus_bottom"] == pytest.approx(0.0)
    assert trend["low"] < 0.0 < trend["high"]
    rng = np.random.default_rng(3)
    x, y = rng.random(12), rng.integers(0, 4, 12).astype(float)  # ties on y
    assert m.spearman(x, y) == pytest.approx(spearmanr(x, y).statistic)


def test_overlap_accuracy_ties_and_empty_bins() -> None:
    # 30 frames at exactly 0 (an empty mask) never split: one bin holds them all, the bins
    # whose edges they fill stay empty and count nothing
    s = np.r_[np.zeros(30), np.linspace(0.1, 1.0, 70)]
    c = np.r_[np.zeros(30, bool), np.ones(70, bool)]
    curve = m.overlap_accuracy(s, c)
    assert len(curve) == 10 and sum(b["count"] for b in curve) == 100
    assert curve[0]["count"] == 30 and curve[0]["accuracy"] == 0.0
    empty = [b for b in curve if b["count"] == 0]
    assert empty and all(math.isnan(b["accuracy"]) and math.isnan(b["low"]) for b in empty)
    assert all(b["correct"] == 0 for b in empty)
    trend = m.overlap_trend(curve)
    assert trend["bins"] == 10 - len(empty) and trend["top_minus_bottom"] == 1.0
    # more bins than frames: every frame counted once, the rest empty
    few = m.overlap_accuracy([0.2, 0.4, 0.9], [False, True, True])
    assert sum(b["count"] for b in few) == 3 and sum(b["count"] == 0 for b in few) == 7
    assert m.overlap_accuracy([], []) == []
    assert m.overlap_trend([])["bins"] == 0
    with pytest.raises(ValueError, match="NaN"):
        m.overlap_accuracy([np.nan, 0.1], [True, False])


def test_overlap_accuracy_all_equal_values(tmp_path) -> None:
    curve = m.overlap_accuracy(np.full(9, 0.4), [True] * 6 + [False] * 3)
    filled = [b for b in curve if b["count"]]
    assert len(filled) == 1 and filled[0]["count"] == 9
    assert filled[0]["accuracy"] == pytest.approx(6 / 9) and filled[0]["centre"] == 0.4
    trend = m.overlap_trend(curve)
    assert trend["bins"] == 1 and math.isnan(trend["spearman"])
    assert math.isnan(trend["top_minus_bottom"]) and math.isnan(trend["low"])
    s = np.arange(100) / 100
    rising = m.overlap_accuracy(s, np.array([j % 10 < j // 10 for j in range(100)]))
    png = m.plot_overlap_accuracy({"all": rising, "flat": curve}, tmp_path / "oa.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
