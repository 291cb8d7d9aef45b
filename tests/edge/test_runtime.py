"""Runtime on a real tiny bundle and real camera-trap frames, with real ONNX Runtime sessions."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edge.bundle import load_bundle
from edge.decode import load_image
from edge.overmap import softmax
from edge.preprocess import prepare, resize_frame
from edge.providers import CPU, ENV, ProviderError
from edge.runtime import Runtime


@pytest.fixture(scope="module")
def runtime(tiny_bundle: Path) -> Runtime:
    return Runtime.from_bundle(load_bundle(tiny_bundle), threads=1)


@pytest.fixture(scope="module")
def frames(colour_frame: Path, ir_frame: Path) -> list[np.ndarray]:
    return [load_image(ir_frame), load_image(colour_frame)]


def test_real_frames(runtime: Runtime, frames: list[np.ndarray]) -> None:
    out = runtime.run(frames)
    assert len(out) == 2
    assert out.logits.shape == (2, 4) and out.logits.dtype == np.float32
    assert out.probs.shape == (2, 4)
    np.testing.assert_allclose(out.probs.sum(axis=1), 1.0, rtol=1e-6)
    assert out.cam.shape == (2, 16, 16) and (out.cam >= 0).all()
    assert out.foreground.shape == (2, 1, 16, 16)
    assert (out.foreground >= 0).all() and (out.foreground <= 1).all()
    assert out.top.tolist() == out.logits.argmax(axis=1).tolist()
    assert out.providers == {"classifier": CPU, "segmenter": CPU}
    # the two frames are different pictures, and the model sees that
    assert not np.allclose(out.foreground[0], out.foreground[1])


def test_batch_of_one_and_five_agree(runtime: Runtime, frames: list[np.ndarray]) -> None:
    ir, colour = frames
    one = runtime.run([colour])
    five = runtime.run([ir, colour, ir, colour, colour])
    for name in ("logits", "probs", "cam", "foreground"):
        a, b = getattr(one, name), getattr(five, name)
        np.testing.assert_allclose(a[0], b[1], rtol=1e-4, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(a[0], b[4], rtol=1e-4, atol=1e-5, err_msg=name)


def test_chunks_above_max_batch(tiny_bundle: Path, frames: list[np.ndarray]) -> None:
    small = Runtime.from_bundle(load_bundle(tiny_bundle), threads=1, max_batch=2)
    images = frames * 2 + frames[:1]
    whole = Runtime.from_bundle(load_bundle(tiny_bundle), threads=1).run(images)
    chunked = small.run(images)
    assert chunked.logits.shape == (5, 4) and chunked.foreground.shape == (5, 1, 16, 16)
    np.testing.assert_allclose(chunked.logits, whole.logits, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(chunked.foreground, whole.foreground, rtol=1e-4, atol=1e-5)


def test_empty_batch_is_refused(runtime: Runtime) -> None:
    with pytest.raises(ValueError, match="at least one image"):
        runtime.run([])


def test_prepare_then_infer_is_run(tiny_bundle: Path, frames: list[np.ndarray]) -> None:
    """The watcher prepares a batch in one thread and infers in another: same results."""
    rt = Runtime.from_bundle(load_bundle(tiny_bundle), threads=1, max_batch=2)
    split = rt.infer(rt.prepare(frames[:2]))
    whole = rt.run(frames[:2])
    np.testing.assert_array_equal(split.logits, whole.logits)
    np.testing.assert_array_equal(split.foreground, whole.foreground)
    np.testing.assert_allclose(split.probs.sum(axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="at most 2"):
        rt.infer(rt.prepare([*frames, frames[0]]))


def test_shared_resize_matches_separate_preprocessing(
    runtime: Runtime, frames: list[np.ndarray]
) -> None:
    m = runtime.bundle.manifest
    batch = runtime.prepare(frames)
    np.testing.assert_array_equal(batch.x_cls, prepare(frames, m.classifier.input))
    np.testing.assert_array_equal(batch.x_seg, prepare(frames, m.segmenter.input))
    views = np.stack([resize_frame(f, m.classifier.input) for f in frames])
    np.testing.assert_array_equal(batch.views, views)
    assert not np.array_equal(batch.x_cls, batch.x_seg)  # same pixels, two normalisations


def test_segmenter_with_its_own_geometry(
    bundle_factory: Callable[..., Path], frames: list[np.ndarray]
) -> None:
    root = bundle_factory(seg_size=(48, 40), seg_resize="letterbox")
    rt = Runtime.from_bundle(load_bundle(root), threads=1)
    out = rt.run(frames)
    assert out.cam.shape == (2, 16, 16)
    assert out.foreground.shape == (2, 1, 12, 10)
    x_seg = rt.prepare(frames).x_seg
    np.testing.assert_array_equal(x_seg, prepare(frames, rt.bundle.manifest.segmenter.input))


def test_wrong_output_name_is_refused_at_load(bundle_factory: Callable[..., Path]) -> None:
    root = bundle_factory(cam_outputs=("logits", "heatmap"))
    with pytest.raises(RuntimeError, match=r"classifier\.onnx: no output 'cam'.*heatmap"):
        Runtime.from_bundle(load_bundle(root), threads=1)


def _edited(src: Path, dst: Path, edit: Callable[[dict], None]) -> Path:
    root = Path(shutil.copytree(src, dst))
    raw = json.loads((root / "manifest.json").read_text())
    edit(raw)
    (root / "manifest.json").write_text(json.dumps(raw))
    return root


def test_manifest_class_count_mismatch(tiny_bundle: Path, tmp_path: Path) -> None:
    root = _edited(tiny_bundle, tmp_path / "b", lambda m: m["classifier"]["classes"].append("owl"))
    with pytest.raises(RuntimeError, match=r"classifier\.onnx: output 'logits'.*\[N, 5\]"):
        Runtime.from_bundle(load_bundle(root), threads=1)


def test_manifest_input_size_mismatch(tiny_bundle: Path, tmp_path: Path) -> None:
    def edit(m: dict) -> None:
        m["segmenter"]["input"]["size"] = [32, 32]

    root = _edited(tiny_bundle, tmp_path / "b", edit)
    with pytest.raises(RuntimeError, match=r"segmenter\.onnx: input 'image'.*\[N, 3, 32, 32\]"):
        Runtime.from_bundle(load_bundle(root), threads=1)


def test_manifest_map_size_mismatch(tiny_bundle: Path, tmp_path: Path) -> None:
    root = _edited(tiny_bundle, tmp_path / "b", lambda m: m["classifier"].update(cam_size=[7, 7]))
    with pytest.raises(RuntimeError, match=r"output 'cam' has shape \['batch', 16, 16\]"):
        Runtime.from_bundle(load_bundle(root), threads=1)


def test_providers_from_env(tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "cuda,cpu")  # CUDA is not in this build: dropped, CPU used
    rt = Runtime.from_bundle(load_bundle(tiny_bundle), threads=1)
    assert rt.providers == {"classifier": CPU, "segmenter": CPU}
    monkeypatch.setenv(ENV, "cuda,npu")
    with pytest.raises(ProviderError, match="'npu'"):
        Runtime.from_bundle(load_bundle(tiny_bundle), threads=1)


def test_softmax_is_stable() -> None:
    p = softmax(np.array([[1000.0, 0.0], [-1000.0, -1000.0], [1.0, 2.0]]))
    assert np.isfinite(p).all()
    np.testing.assert_allclose(p[0], [1.0, 0.0])
    np.testing.assert_allclose(p[1], [0.5, 0.5])
    np.testing.assert_allclose(p[2], np.exp([1.0, 2.0]) / np.exp([1.0, 2.0]).sum(), rtol=1e-6)


def test_device_modules_do_not_import_torch() -> None:
    """The device side must run where torch is not installed."""
    code = (
        "import sys, edge.providers, edge.runtime, edge.show, edge.decode, edge.preprocess;"
        "sys.exit('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_fixed_batch_is_refused_at_load(bundle_factory: Callable[..., Path]) -> None:
    root = bundle_factory(dynamic=False)
    with pytest.raises(RuntimeError, match=r"classifier\.onnx: batch dimension fixed at 2"):
        Runtime.from_bundle(load_bundle(root), threads=1)


def test_a_bundle_whose_classifier_also_segments_runs_one_session(
    tmp_path: Path, tiny_bundle: Path
) -> None:
    """segmenter.in_classifier: the classifier's graph returns `foreground` too."""
    torch = pytest.importorskip("torch")
    from torch import nn

    from edge.bundle import file_entry, read_manifest, write_manifest
    from export.cam import CamClassifier

    class Joint(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4, padding=1), nn.ReLU())
            self.clf = CamClassifier(self.features, nn.Linear(8, 4), "features")
            self.seg = nn.Conv2d(8, 1, 1)

        def forward(self, x):
            a = self.features(x)
            logits, cam = self.clf.from_features(a)
            return logits, cam, torch.sigmoid(self.seg(a))

    from export.onnx_io import export_classifier_onnx

    root = tmp_path / "joint"
    shutil.copytree(tiny_bundle, root)  # 64x64 input
    export_classifier_onnx(
        Joint().eval(), root / "classifier.onnx", (64, 64), outputs=("logits", "cam", "foreground")
    )
    m = read_manifest(root)
    seg = m.segmenter.model_copy(update={"in_classifier": True, "output_size": (16, 16)})
    clf = m.classifier.model_copy(
        update={"file": file_entry(root, "classifier.onnx"), "cam_size": (16, 16)}
    )
    write_manifest(root, m.model_copy(update={"classifier": clf, "segmenter": seg}))
    rt = Runtime.from_bundle(load_bundle(root))
    assert rt.segmenter is None  # one session
    frames = [np.full((40, 50, 3), 90, np.uint8), np.zeros((64, 64, 3), np.uint8)]
    out = rt.run(frames)
    assert out.foreground.shape == (2, 1, 16, 16)
    assert ((out.foreground >= 0) & (out.foreground <= 1)).all()
    assert out.cam.shape == (2, 16, 16) and out.logits.shape == (2, 4)
    assert rt.providers["segmenter"] == rt.providers["classifier"]


def test_runtime_probabilities_are_edge_overmap_softmax(tiny_bundle: Path) -> None:
    """One softmax: the runtime's probs are edge.overmap's on its own logits (float32)."""
    import edge.mcdropout
    import edge.runtime
    import edge.simulate

    for module in (edge.runtime, edge.mcdropout, edge.simulate):
        assert module.softmax is softmax, module.__name__  # no second copy
    rt = Runtime.from_bundle(load_bundle(tiny_bundle), threads=1)
    h, w = load_bundle(tiny_bundle).manifest.classifier.input.size
    frame = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    out = rt.run([frame, frame[::-1]])
    assert out.probs.dtype == np.float32
    np.testing.assert_allclose(out.probs, softmax(out.logits, axis=1), rtol=1e-6, atol=1e-7)


def test_fusion_entropy_cue_is_edge_overmap_entropy() -> None:
    from edge.fusion import FEATURES, features
    from edge.overmap import entropy

    p = softmax(np.random.default_rng(1).normal(size=(5, 4)) * 3, axis=1)
    p[0] = [1.0, 0.0, 0.0, 0.0]  # 0 log 0 taken as 0
    X = features(p, np.full(5, 0.5), np.full(5, 0.1))
    np.testing.assert_allclose(X[:, FEATURES.index("entropy")], entropy(p, normalise=True))
