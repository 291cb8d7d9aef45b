"""Fusion: cues computed by hand, the numpy apply matches scikit-learn, the guard's choice."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from edge import fusion as fu
from edge.metrics import auroc


def _synthetic(n: int, rng: np.random.Generator, *, overmap_signal: bool) -> tuple:
    """Cues whose link to correctness we know: softmax carries some signal; Over-MAP carries
    independent signal only when overmap_signal, else every other cue is noise."""
    soft = rng.uniform(0.3, 1.0, n)
    om = rng.uniform(0.0, 1.0, n)
    z = 4 * (soft - 0.65) + (6 * (om - 0.5) if overmap_signal else 0.0)
    correct = rng.random(n) < 1 / (1 + np.exp(-z))
    X = np.column_stack(
        [
            soft,
            soft * rng.uniform(0.2, 1, n),
            rng.random(n),
            om,
            rng.random(n),
            rng.random(n) * (rng.random(n) < 0.1),
            rng.random(n) * (rng.random(n) < 0.1),
            om * soft,
        ]
    )
    return X, correct


LEGACY = list(fu.LEGACY_FEATURES)  # _synthetic's columns


def test_features_by_hand() -> None:
    probs = np.array(
        [
            [0.7, 0.2, 0.1],  # predicts empty (index 0)
            [0.1, 0.5, 0.4],  # predicts an animal
            [1 / 3, 1 / 3, 1 / 3],
        ]
    )
    X = fu.features(probs, [0.2, 0.8, 0.0], [0.1, 0.001, 0.025], empty_index=0)
    assert X.shape == (3, len(fu.FEATURES))
    col = {n: X[:, i] for i, n in enumerate(fu.FEATURES)}
    np.testing.assert_allclose(col["max_softmax"], [0.7, 0.5, 1 / 3])
    np.testing.assert_allclose(col["margin"], [0.5, 0.1, 0.0], atol=1e-12)
    np.testing.assert_allclose(col["entropy"][2], 1.0)
    ent0 = -(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1)) / math.log(3)
    assert col["entropy"][0] == pytest.approx(ent0)
    # empty with 10 % foreground: full conflict; animal with 0.1 % foreground: 1 - 0.001/0.005
    np.testing.assert_allclose(col["conflict_empty"], [1.0, 0.0, 1.0 * (0.025 / 0.05)])
    np.testing.assert_allclose(col["conflict_animal"], [0.0, 0.8, 0.0])
    np.testing.assert_allclose(col["overmap_x_softmax"], [0.14, 0.4, 0.0])
    np.testing.assert_allclose(col["pred_empty"], [1.0, 0.0, 1.0])
    np.testing.assert_allclose(col["overmap_lift"], [0.1, 0.799, -0.025])
    np.testing.assert_allclose(col["overmap_animal"], [0.0, 0.8, 0.0])
    np.testing.assert_allclose(col["foreground_empty"], [0.1, 0.0, 0.025])
    no_empty = fu.features(probs, [0.2, 0.8, 0.0], [0.1, 0.001, 0.025])
    assert not no_empty[:, 5:7].any() and not no_empty[:, 8].any()
    with pytest.raises(ValueError, match="one value per row"):
        fu.features(probs, [0.1], [0.1, 0.2, 0.3])


def test_default_ranks_like_softmax_without_conflict() -> None:
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), 50)
    X = fu.features(probs, rng.random(50), np.full(50, 0.02), empty_index=0)
    no_conflict = (X[:, 5] == 0) & (X[:, 6] == 0)
    s = fu.apply_fusion(None, X)
    np.testing.assert_array_equal(s[no_conflict], X[no_conflict, 0])
    conflict = ~no_conflict
    assert conflict.any() and np.all(s[conflict] < X[conflict, 0])
    assert np.all(s >= 0.5 * X[:, 0])


def test_logistic_apply_matches_sklearn_predict_proba() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(1)
    X, c = _synthetic(400, rng, overmap_signal=True)
    params = fu.fit_fusion(X, c, guard=False, feature_names=LEGACY)
    params = json.loads(json.dumps(params))  # what a bundle's manifest holds
    ref = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000)).fit(X, c)
    Xn, _ = _synthetic(100, rng, overmap_signal=True)
    np.testing.assert_allclose(
        fu.apply_fusion(params, Xn), ref.predict_proba(Xn)[:, 1], rtol=0, atol=1e-9
    )
    assert params["chosen"] == "fusion" and params["cv"] is None


def test_isotonic_apply_matches_sklearn() -> None:
    from sklearn.isotonic import IsotonicRegression

    rng = np.random.default_rng(2)
    X, c = _synthetic(300, rng, overmap_signal=False)
    fitted = fu.fit_fusion(X, c, method="isotonic", guard=False, feature_names=LEGACY)
    params = json.loads(json.dumps(fitted))
    ref = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(X[:, 0], c)
    Xn, _ = _synthetic(100, rng, overmap_signal=False)
    Xn[0, 0], Xn[1, 0] = 0.0, 2.0  # outside the fitted range: clipped like sklearn
    np.testing.assert_allclose(fu.apply_fusion(params, Xn), ref.predict(Xn[:, 0]), atol=1e-12)


def test_guard_falls_back_to_softmax_when_other_cues_are_noise() -> None:
    rng = np.random.default_rng(3)
    X, c = _synthetic(600, rng, overmap_signal=False)
    params = fu.fit_fusion(X, c, feature_names=LEGACY)
    assert params["chosen"] == "softmax", params["cv"]
    assert params["features"] == ["max_softmax"]
    # Platt scaling is monotone: it ranks new frames exactly as softmax does
    Xn, cn = _synthetic(300, rng, overmap_signal=False)
    assert auroc(fu.apply_fusion(params, Xn), cn) == pytest.approx(auroc(Xn[:, 0], cn))


def test_guard_keeps_fusion_when_overmap_carries_signal() -> None:
    rng = np.random.default_rng(4)
    X, c = _synthetic(600, rng, overmap_signal=True)
    params = fu.fit_fusion(X, c, feature_names=LEGACY)
    assert params["chosen"] == "fusion"
    assert params["cv"]["fusion_auroc"] > params["cv"]["softmax_auroc"] + 0.05
    gains = np.array(params["cv"]["fold_gains"])
    assert gains.size == params["cv"]["folds"]
    assert gains.mean() - params["cv"]["gain_se"] > params["cv"]["min_gain"]
    Xn, cn = _synthetic(600, rng, overmap_signal=True)
    assert auroc(fu.apply_fusion(params, Xn), cn) > auroc(Xn[:, 0], cn) + 0.05


def test_fit_checks_inputs() -> None:
    X = np.random.default_rng(0).random((20, len(fu.FEATURES)))  # today's full table
    with pytest.raises(ValueError, match="both right and wrong"):
        fu.fit_fusion(X, np.ones(20, bool))
    with pytest.raises(ValueError, match="method"):
        fu.fit_fusion(X, np.arange(20) % 2 == 0, method="forest")
    with pytest.raises(ValueError, match="X must be"):
        fu.apply_fusion(None, X[:, :3])


def test_params_stored_before_the_new_cues_still_apply() -> None:
    """A manifest written with the 8-column table keeps working on today's wider table."""
    rng = np.random.default_rng(5)
    X8, c = _synthetic(300, rng, overmap_signal=True)
    old = json.loads(json.dumps(fu.fit_fusion(X8, c, guard=False, feature_names=LEGACY)))
    assert old["input_features"] == LEGACY
    probs = rng.dirichlet(np.ones(4), 40)
    full = fu.features(probs, rng.random(40), rng.random(40) * 0.2, empty_index=0)
    assert full.shape[1] == len(fu.FEATURES) > len(LEGACY)
    np.testing.assert_allclose(fu.apply_fusion(old, full), fu.apply_fusion(old, full[:, :8]))
    np.testing.assert_allclose(fu.apply_fusion(None, full), fu.apply_fusion(None, full[:, :8]))


def test_guard_folds_follow_time_unless_shuffled() -> None:
    """Unshuffled folds are contiguous: a cue that only marks one burst does not pass the
    guard, though shuffled folds, with the burst on both sides, would let it through."""
    rng = np.random.default_rng(6)
    n = 600
    X, c = _synthetic(n, rng, overmap_signal=False)
    burst = np.zeros(n, bool)
    burst[200:320] = True  # a stretch of frames the classifier gets wrong, e.g. a new species
    c = c & ~burst
    X[:, 3] = rng.random(n) * 0.3 + 0.7 * burst  # Over-MAP high exactly on that burst
    X[:, 7] = X[:, 3] * X[:, 0]
    kept = fu.fit_fusion(X, c, feature_names=LEGACY, shuffle=True)
    assert kept["chosen"] == "fusion" and kept["cv"]["shuffled"] is True
    timed = fu.fit_fusion(X, c, feature_names=LEGACY)
    assert timed["cv"]["shuffled"] is False
    assert timed["cv"]["fusion_auroc"] < kept["cv"]["fusion_auroc"]
