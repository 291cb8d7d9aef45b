"""The review overlay shows the map where the model looked and the mask's outline."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge.bundle import InputSpec
from edge.overlay import BANNER, render, write_overlay

SPEC = InputSpec(size=(224, 224), mean=(127.0,) * 3, std=(128.0,) * 3, resize="stretch")


def test_heat_sits_where_the_map_is_hot_and_the_outline_where_the_mask_ends(tmp_path: Path):
    grey = np.full((300, 400, 3), 100, np.uint8)
    cam = np.zeros((7, 7), np.float32)
    cam[1, 5] = 1.0  # hot near the top right (row = y, col = x)
    mask = np.zeros((28, 28), np.float32)
    mask[14:, :14] = 1.0  # animal in the bottom left
    out = render(grey, cam, mask, SPEC, label="elk", scores={"softmax": 0.9}, width=448)
    assert out.shape == (BANNER + 448, 448, 3)
    body = out[BANNER:].astype(int)
    redness = body[..., 0] - body[..., 2]
    y, x = np.unravel_index(np.argmax(redness), redness.shape)
    assert y < 448 * 3 / 7 and x > 448 * 4 / 7  # the top right, not flipped
    white = (body > 240).all(axis=-1)
    ys, xs = np.nonzero(white)
    assert ys.min() > 448 * 0.4 and xs.max() < 448 * 0.6  # the outline bounds the bottom left
    assert (out[:BANNER] != 24).any()  # the banner carries text

    path = write_overlay(tmp_path / "o" / "frame.jpg.overmap.jpg", out)
    back = cv2.imread(str(path))
    assert back is not None and back.shape == out.shape
    assert not list(path.parent.glob("*.tmp"))


def test_a_flat_map_and_no_mask_still_render():
    out = render(np.zeros((50, 80, 3), np.uint8), np.zeros((7, 7), np.float32), None, SPEC,
                 label="empty", scores={})
    assert out.dtype == np.uint8 and out.shape[1] == 448
