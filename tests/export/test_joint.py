"""One backbone pass for classifier and segmenter, only when they really share the backbone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from export.joint import JointLite0, export_joint_onnx, shares_backbone
from export.models import build_classifier
from export.segmenter import build_segmenter


@pytest.fixture(scope="module")
def pair():
    clf = build_classifier()
    return clf, build_segmenter(input=clf.input)


def test_the_joint_graph_equals_the_two_models(pair, tmp_path: Path) -> None:
    clf, seg = pair
    assert shares_backbone(clf, seg)
    path = export_joint_onnx(JointLite0(clf.model, seg.model), tmp_path / "j.onnx", (224, 224))
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        logits, cam = clf.model(x)
        fg = seg.model(x)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    jl, jc, jf = sess.run(["logits", "cam", "foreground"], {"image": x.numpy()})
    np.testing.assert_allclose(jl, logits.numpy(), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(jc, cam.numpy(), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(jf, fg.numpy(), atol=1e-4)


def test_a_different_backbone_or_input_is_not_shared(pair) -> None:
    clf, seg = pair
    other = build_segmenter("lraspp_mobilenet_v3_large")
    assert not shares_backbone(clf, other)
    changed = build_segmenter(input=clf.input)
    with torch.no_grad():
        changed.model.features._conv_head.weight.mul_(1.01)
    assert not shares_backbone(clf, changed)
    moved = build_segmenter(input=clf.input.model_copy(update={"resize": "stretch"}))
    assert not shares_backbone(clf, moved)


def test_the_guess_head_and_the_features_for_learning_come_out_of_the_same_pass(
    pair, tmp_path: Path
) -> None:
    """`guess` is the ImageNet head on the pooled features; `features` and `fmap` let the device
    recompute the graph's own logits and map with numpy, so a learned head can replace it."""
    from torch import nn

    clf, seg = pair
    head = clf.model.chain[-1]
    four = nn.Linear(1280, 4)  # a small camera-trap head beside the ImageNet one as the guess
    clf4 = type(clf.model)(clf.model.features, four, clf.model.cam_layer).eval()
    path = export_joint_onnx(JointLite0(clf4, seg.model, head), tmp_path / "g.onnx", (224, 224))
    x = torch.randn(2, 3, 224, 224)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits, cam, guess, feats, fmap = sess.run(
        ["logits", "cam", "guess", "features", "fmap"], {"image": x.numpy()}
    )
    with torch.no_grad():
        imagenet, _ = clf.model(x)
    np.testing.assert_allclose(guess, imagenet.numpy(), rtol=1e-3, atol=1e-3)
    w, b = four.weight.detach().numpy(), four.bias.detach().numpy()
    np.testing.assert_allclose(feats @ w.T + b, logits, rtol=1e-3, atol=1e-4)
    top = logits.argmax(1)
    mine = np.maximum(np.einsum("nk,nkhw->nhw", w[top], fmap), 0) / (fmap.shape[2] * fmap.shape[3])
    np.testing.assert_allclose(mine, cam, rtol=1e-3, atol=1e-5)
