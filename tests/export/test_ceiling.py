"""The ceiling measurement's figures and cues, on hand-made arrays where the answer is known
and on a real camera frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.categories import CATEGORIES
from edge.decode import load_image
from export.ceiling import EMPTY, coverage_at, empty_recall_at, nearest_probs, outcome, tiles

CAMTRAP = Path(__file__).resolve().parents[3] / "shared" / "data" / "camtrap"


def test_empty_recall_keeps_the_non_empty_frames_lost_within_the_bar() -> None:
    others = np.linspace(0.0, 0.99, 100)  # 100 non-empty frames: 1 % may be set aside
    empties = np.array([0.985, 0.995, 0.5])
    p = np.concatenate([others, empties])
    is_empty = np.r_[np.zeros(100, bool), np.ones(3, bool)]
    # the top non-empty frame (0.99) may go; the next (0.98) must not: 0.985 and 0.995 pass
    assert empty_recall_at(p, is_empty, 0.01) == pytest.approx(2 / 3)
    # with no frame allowed to go, only what beats 0.99
    assert empty_recall_at(p, is_empty, 0.0) == pytest.approx(1 / 3)
    # a tie with a non-empty frame at the bar is not set aside
    tie = np.r_[others, [others[-2]]]
    assert empty_recall_at(tie, np.r_[np.zeros(100, bool), [True]], 0.01) == 0.0


def test_coverage_is_the_longest_confident_run_within_the_error_bar() -> None:
    conf = np.linspace(1.0, 0.0, 100)
    correct = np.r_[np.ones(90, bool), np.zeros(10, bool)]
    # 91 frames hold 1 wrong (<= 1.82 allowed); 92 would hold 2 (> 1.84)
    assert coverage_at(conf, correct, 0.02) == pytest.approx(0.91)
    # one wrong frame first: only from 50 frames on is 1 wrong within 2 %
    first_wrong = np.r_[[False], np.ones(99, bool)]
    assert coverage_at(conf, first_wrong, 0.02) == 1.0
    assert coverage_at(conf[:10], first_wrong[:10], 0.02) == 0.0


def test_outcome_reads_categories_off_the_probabilities() -> None:
    y = np.array([EMPTY, EMPTY, 0, 0])
    P = np.zeros((4, len(CATEGORIES)))
    P[0, EMPTY], P[1, EMPTY], P[2, 0], P[3, EMPTY] = 0.9, 0.6, 0.8, 0.7
    P[:, 0] = np.where(P[:, 0] == 0, 1 - P.max(1), P[:, 0])
    r = outcome(P, y)
    assert r["accuracy"] == 0.75  # frame 3, an animal, reads as empty
    # frame 3 (0.7 empty) may not be set aside: only frame 0 (0.9) beats it
    assert r["empty_recall_at_1pct_lost"] == 0.5


def test_tiles_cover_the_frame_corner_to_corner() -> None:
    image = np.arange(300 * 240 * 3, dtype=np.int64).reshape(300, 240, 3)
    t = tiles(image, 2)
    assert [x.shape[:2] for x in t] == [(200, 160)] * 4
    assert np.array_equal(t[0], image[:200, :160])
    assert np.array_equal(t[3], image[100:, 80:])


@pytest.mark.skipif(not CAMTRAP.is_dir(), reason="needs ../shared/data/camtrap")
def test_tiles_of_a_real_frame_are_two_thirds_of_its_sides() -> None:
    frame = load_image(CAMTRAP / "mlwic_examples/CA-01/CA-01_0006501.jpg")
    h, w = frame.shape[:2]
    assert [x.shape[:2] for x in tiles(frame, 2)] == [(h * 2 // 3, w * 2 // 3)] * 4


def test_nearest_takes_the_most_alike_earlier_frame() -> None:
    # frame 2 looks like frame 0 (a vehicle), not like frame 1 (empty)
    X = np.array([[1.0, 0.0, 0.1], [0.0, 1.0, 0.0], [0.9, 0.1, 0.1]])
    y = np.array([CATEGORIES.index("vehicle"), EMPTY, 0])
    P = nearest_probs(X, y, np.array([2]))
    assert P[0].argmax() == CATEGORIES.index("vehicle")
    assert P[0].sum() == pytest.approx(1.0)
    # frame 1's only earlier frame, frame 0, is nothing like it: its label gets no weight
    assert nearest_probs(X, y, np.array([1]))[0, CATEGORIES.index("vehicle")] == 0.0
