"""A learned head in the bundle: numpy logits and maps from the graph's features and map layer,
against the graph's own head, on a real tiny bundle and real camera-trap frames."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edge.bundle import BundleError, file_entry, load_bundle, read_manifest, write_manifest
from edge.decode import load_image
from edge.linear_head import HEAD_FILE, apply_head, fit_head, head_cam, load_head, save_head
from edge.overmap import softmax
from edge.runtime import Runtime


@pytest.fixture(scope="module")
def learnable(bundle_factory: Callable[..., Path]) -> Path:
    return bundle_factory(learnable=True)


@pytest.fixture(scope="module")
def frames(colour_frame: Path, ir_frame: Path) -> list[np.ndarray]:
    return [load_image(ir_frame), load_image(colour_frame)]


def graph_head(bundle: Path) -> tuple[np.ndarray, np.ndarray]:
    """The classifier graph's own Linear(16, 4), read from its initializers."""
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    inits = {
        i.name: numpy_helper.to_array(i)
        for i in onnx.load(bundle / "classifier.onnx").graph.initializer
    }
    (w,) = [v for v in inits.values() if v.shape == (4, 16)]
    (b,) = [v for v in inits.values() if v.shape == (4,)]
    return w.astype(np.float32), b.astype(np.float32)


def with_head(src: Path, dest: Path, weight: np.ndarray, bias: np.ndarray) -> Path:
    """A copy of the bundle whose manifest names a learned head."""
    shutil.copytree(src, dest)
    save_head(dest / HEAD_FILE, weight, bias)
    m = read_manifest(dest)
    c = m.classifier.model_copy(update={"head": file_entry(dest, HEAD_FILE)})
    write_manifest(dest, m.model_copy(update={"classifier": c}))
    return dest


def test_features_come_back_when_asked(learnable: Path, frames: list[np.ndarray]) -> None:
    rt = Runtime.from_bundle(load_bundle(learnable), threads=1, features=True)
    out = rt.run(frames)
    assert out.features is not None and out.features.shape == (2, 16)
    assert out.fmap is not None and out.fmap.shape == (2, 16, 16, 16)
    np.testing.assert_allclose(out.features, out.fmap.mean(axis=(2, 3)), rtol=1e-5, atol=1e-6)
    plain = Runtime.from_bundle(load_bundle(learnable), threads=1).run(frames)
    assert plain.features is None and plain.fmap is None


def test_own_head_in_numpy_equals_the_graph(
    learnable: Path, frames: list[np.ndarray], tmp_path: Path
) -> None:
    w, b = graph_head(learnable)
    graph = Runtime.from_bundle(load_bundle(learnable), threads=1, features=True).run(frames)
    logits, cam = apply_head(w, b, graph.features, graph.fmap)
    np.testing.assert_allclose(logits, graph.logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(cam, graph.cam, rtol=1e-4, atol=1e-6)
    # the same through a bundle whose manifest names that head
    headed = with_head(learnable, tmp_path / "headed", w, b)
    out = Runtime.from_bundle(load_bundle(headed), threads=1).run(frames)
    np.testing.assert_allclose(out.logits, graph.logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.cam, graph.cam, rtol=1e-4, atol=1e-6)


def test_another_head_is_followed(
    learnable: Path, frames: list[np.ndarray], tmp_path: Path
) -> None:
    w, b = graph_head(learnable)
    w2, b2 = -w[::-1].copy(), b[::-1].copy()  # another head: classes reversed, sign flipped
    graph = Runtime.from_bundle(load_bundle(learnable), threads=1, features=True).run(frames)
    out = Runtime.from_bundle(
        load_bundle(with_head(learnable, tmp_path / "b", w2, b2)), threads=1
    ).run(frames)
    want = graph.features @ w2.T + b2
    np.testing.assert_allclose(out.logits, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.probs, softmax(want), rtol=1e-5, atol=1e-6)
    assert not np.allclose(out.logits, graph.logits)
    top = want.argmax(1)
    h, wd = graph.fmap.shape[2:]
    manual = np.maximum(np.einsum("nk,nkhw->nhw", w2[top], graph.fmap) / (h * wd), 0)
    np.testing.assert_allclose(out.cam, manual, rtol=1e-4, atol=1e-6)


def test_head_needs_features_in_the_graph(tiny_bundle: Path, tmp_path: Path) -> None:
    headed = with_head(tiny_bundle, tmp_path / "b", np.zeros((4, 16)), np.zeros(4))
    with pytest.raises(RuntimeError, match=r"classifier\.onnx.*no output 'features'"):
        Runtime.from_bundle(load_bundle(headed), threads=1)


def test_head_with_wrong_class_count_is_refused(learnable: Path, tmp_path: Path) -> None:
    headed = with_head(learnable, tmp_path / "b", np.zeros((3, 16)), np.zeros(3))
    with pytest.raises(RuntimeError, match=r"head\.npz: 3 classes, the manifest names 4"):
        Runtime.from_bundle(load_bundle(headed), threads=1)


def test_head_checksum_is_verified(learnable: Path, tmp_path: Path) -> None:
    w, b = graph_head(learnable)
    headed = with_head(learnable, tmp_path / "b", w, b)
    save_head(headed / HEAD_FILE, w * 2, b)  # replaced after the manifest was written
    with pytest.raises(BundleError, match=r"head\.npz"):
        load_bundle(headed)
    raw = json.loads((headed / "manifest.json").read_text())
    assert raw["classifier"]["head"]["path"] == HEAD_FILE


def test_fit_head_learns_separable_classes_and_keeps_absent_ones() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)) * 4
    y = np.repeat([0, 2, 3], 40)  # class 1 never appears
    X = centres[np.repeat([0, 1, 2], 40)] + rng.normal(size=(120, 8))
    head = fit_head(X, y, n_classes=4, C=1.0)
    assert head["weight"].shape == (4, 8) and head["bias"].shape == (4,)
    pred = (X @ head["weight"].T + head["bias"]).argmax(1)
    assert (pred == y).mean() > 0.95 and not (pred == 1).any()
    with pytest.raises(ValueError, match="two classes"):
        fit_head(X[:40], y[:40], n_classes=4)


def test_head_file_round_trip_and_cam_is_relu(tmp_path: Path) -> None:
    w = np.arange(6, dtype=np.float32).reshape(2, 3) - 2
    b = np.array([0.5, -0.5], np.float32)
    wr, br = load_head(save_head(tmp_path / "h.npz", w, b))
    np.testing.assert_array_equal(wr, w)
    np.testing.assert_array_equal(br, b)
    fmap = np.ones((1, 3, 2, 2), np.float32)
    assert (head_cam(w, fmap, np.array([0])) == 0).all()  # -2-1+0 < 0: clipped
    # (1 + 2 + 3) / (h * w)
    np.testing.assert_allclose(head_cam(w, fmap, np.array([1])), np.full((1, 2, 2), 6 / 4))
