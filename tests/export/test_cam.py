"""The exported classifier's `cam` output is Grad-CAM: held against torch autograd and captum's
LayerGradCam on real photos, through real ONNX Runtime sessions, for Lite0 and torchvision heads
(Linear; Linear-Hardswish-Dropout-Linear; Dropout-Linear; LayerNorm2d-Flatten-Linear)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models.convnext import LayerNorm2d

from edge.preprocess import prepare
from export.cam import CamClassifier, UnsupportedHead
from export.models import build_classifier
from export.onnx_io import export_classifier_onnx

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"

CAM_TOL = 1e-4  # max abs difference of min-max normalised maps, ONNX vs the references
FIGURES: dict[str, dict[str, float]] = {}


@dataclass
class Run:
    name: str
    torch_logits: np.ndarray
    torch_cam: np.ndarray  # the forward-only map, eager torch
    onnx_logits: np.ndarray
    onnx_cam: np.ndarray
    ref_logits: np.ndarray  # autograd Grad-CAM's forward
    ref_cam: np.ndarray
    captum_cam: np.ndarray


MODELS = [
    "efficientnet_lite0",
    "mobilenet_v3_large",  # head: Linear, Hardswish, Dropout, Linear
    "efficientnet_b0",  # head: Dropout, Linear
    pytest.param("resnet50", marks=pytest.mark.slow),  # head: Linear
    pytest.param("convnext_tiny", marks=pytest.mark.slow),  # head: LayerNorm2d, Flatten, Linear
]


@pytest.fixture(scope="module", params=MODELS)
def run(request, imagenet_batch, ref: SimpleNamespace, tmp_path_factory) -> Run:  # type: ignore[no-untyped-def]
    name = request.param
    torch.manual_seed(0)
    if name == "efficientnet_lite0":
        src = request.getfixturevalue("lite0_source")
        path = request.getfixturevalue("lite0_onnx")
    else:
        src = build_classifier(name)  # random weights, seed 0
        x_cal = torch.from_numpy(prepare(imagenet_batch(1, 2), src.input))
        ref.calibrate_batchnorm(src.model, x_cal)
        path = export_classifier_onnx(
            src.model, tmp_path_factory.mktemp(name) / "c.onnx", src.input.size
        )
    model = src.model.requires_grad_(False)
    x = prepare(imagenet_batch(0, 2), src.input)
    onnx_logits, onnx_cam = ref.ort_session(path).run(None, {"image": x})
    xt = torch.from_numpy(x)
    with torch.no_grad():
        torch_logits, torch_cam = model(xt)
    ref_logits, ref_cam = ref.gradcam_autograd(model, xt)
    captum_cam = ref.gradcam_captum(model, xt, ref_logits.argmax(1))
    r = Run(
        name,
        torch_logits.numpy(),
        torch_cam.numpy(),
        onnx_logits,
        onnx_cam,
        ref_logits,
        ref_cam,
        captum_cam,
    )
    mm = ref.minmax
    FIGURES[name] = {
        "onnx_vs_autograd": float(np.abs(mm(r.onnx_cam) - mm(r.ref_cam)).max()),
        "onnx_vs_captum": float(np.abs(mm(r.onnx_cam) - mm(r.captum_cam)).max()),
        "torch_vs_autograd": float(np.abs(mm(r.torch_cam) - mm(r.ref_cam)).max()),
        "logits_rel": float(
            np.abs(r.onnx_logits - r.torch_logits).max() / np.abs(r.torch_logits).max()
        ),
    }
    print(name, FIGURES[name])
    return r


def test_onnx_cam_is_autograd_gradcam(run: Run, ref: SimpleNamespace) -> None:
    assert run.onnx_cam.shape == run.ref_cam.shape and run.onnx_cam.dtype == np.float32
    assert (run.onnx_cam >= 0).all() and (run.onnx_cam.max(axis=(1, 2)) > 0).all()
    diff = np.abs(ref.minmax(run.onnx_cam) - ref.minmax(run.ref_cam)).max()
    assert diff <= CAM_TOL, f"{run.name}: ONNX cam vs autograd Grad-CAM differ by {diff:.2e}"


def test_onnx_cam_is_captum_layergradcam(run: Run, ref: SimpleNamespace) -> None:
    diff = np.abs(ref.minmax(run.onnx_cam) - ref.minmax(run.captum_cam)).max()
    assert diff <= CAM_TOL, f"{run.name}: ONNX cam vs captum LayerGradCam differ by {diff:.2e}"


def test_forward_only_cam_is_gradcam_in_torch(run: Run, ref: SimpleNamespace) -> None:
    # Same framework, same float32 backbone: only the head's VJP differs, so this is tight.
    diff = np.abs(ref.minmax(run.torch_cam) - ref.minmax(run.ref_cam)).max()
    assert diff <= 1e-5, f"{run.name}: forward-only cam vs autograd differ by {diff:.2e}"
    np.testing.assert_allclose(run.torch_logits, run.ref_logits, rtol=1e-6, atol=1e-6)


def test_onnx_logits_match_torch(run: Run) -> None:
    scale = np.abs(run.torch_logits).max()
    np.testing.assert_allclose(run.onnx_logits, run.torch_logits, rtol=1e-3, atol=1e-4 * scale)
    assert (run.onnx_logits.argmax(1) == run.torch_logits.argmax(1)).all()


def test_lite0_top1_on_imagenet_sample(
    lite0_source,
    lite0_onnx: Path,  # type: ignore[no-untyped-def]
    ref: SimpleNamespace,
) -> None:
    from edge.decode import load_image

    rows = ref.imagenet_rows()[::5]  # 200 photos, one per fifth class
    sess = ref.ort_session(lite0_onnx)
    hits = 0
    for i in range(0, len(rows), 50):
        chunk = rows[i : i + 50]
        x = prepare(
            [load_image((SHARED / "imagenet-sample") / r["file"]) for r in chunk],
            lite0_source.input,
        )
        logits, cam = sess.run(None, {"image": x})
        hits += int((logits.argmax(1) == [int(r["class_id"]) for r in chunk]).sum())
        assert cam.shape == (len(chunk), 7, 7) and (cam >= 0).all()
    top1 = hits / len(rows)
    print(f"lite0 ONNX top-1 on {len(rows)} imagenet-sample photos: {top1:.3f}")
    assert top1 >= 0.85


def test_batch_of_one_and_many_give_each_image_its_own_class(  # type: ignore[no-untyped-def]
    lite0_source, lite0_onnx: Path, imagenet_batch, ref: SimpleNamespace
) -> None:
    import onnx

    graph = onnx.load(str(lite0_onnx)).graph
    dims = {
        o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim]
        for o in [*graph.input, *graph.output]
    }
    assert dims == {
        "image": ["batch", 3, 224, 224],
        "logits": ["batch", 1000],
        "cam": ["batch", 7, 7],
    }
    x = prepare(imagenet_batch(3, 3), lite0_source.input)
    sess = ref.ort_session(lite0_onnx)
    logits3, cam3 = sess.run(None, {"image": x})
    assert len(set(logits3.argmax(1).tolist())) == 3  # three different top classes
    for i in range(3):
        logits1, cam1 = sess.run(None, {"image": x[i : i + 1]})
        np.testing.assert_allclose(logits1[0], logits3[i], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(cam1[0], cam3[i], rtol=1e-4, atol=1e-6)


class _Features(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, stride=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)) - 0.1  # some negative activations too


def _heads() -> dict[str, nn.Module]:
    bn = nn.BatchNorm1d(8)
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.5, 2.0)
    bn.weight.data.normal_()
    ln = nn.LayerNorm(16)
    ln.weight.data.normal_()
    ln.bias.data.normal_()
    return {
        "linear": nn.Linear(16, 5),
        "layernorm2d": nn.Sequential(LayerNorm2d(16), nn.Flatten(1), nn.Linear(16, 5)),
        "mixed": nn.Sequential(
            ln,
            nn.Linear(16, 8),
            nn.GELU(),
            bn,
            nn.SiLU(),
            nn.Identity(),
            nn.Linear(8, 8),
            nn.ReLU6(),
            nn.Dropout(0.3),
            nn.Linear(8, 8),
            nn.ReLU(),
            nn.Hardswish(),
            nn.Sigmoid(),
            nn.Linear(8, 5),
        ),
        "no_final_linear": nn.Sequential(nn.Linear(16, 5), nn.Tanh()),  # one-hot path in ONNX
    }


@pytest.mark.parametrize("kind", list(_heads()))
def test_head_chains_give_gradcam_in_onnx(kind: str, ref: SimpleNamespace, tmp_path: Path) -> None:
    torch.manual_seed(1)
    head = _heads()[kind]
    model = CamClassifier(_Features(), head, "features").eval().requires_grad_(False)
    x = torch.randn(3, 3, 64, 64)
    ref_logits, ref_cam = ref.gradcam_autograd(model, x)
    # the reference's logits come from the head's own forward (LayerNorm2d on [N,C,1,1])
    with torch.no_grad():
        pooled = model.features(x).mean(dim=(2, 3))
        own = head(pooled[:, :, None, None]) if kind == "layernorm2d" else head(pooled)
    np.testing.assert_allclose(ref_logits, own.numpy(), rtol=1e-5, atol=1e-6)
    sess = ref.ort_session(export_classifier_onnx(model, tmp_path / "h.onnx", (64, 64)))
    for n in (1, 3):
        logits, cam = sess.run(None, {"image": x[:n].numpy()})
        np.testing.assert_allclose(logits, ref_logits[:n], rtol=1e-4, atol=1e-6)
        scale = ref_cam[:n].max()
        assert scale > 0
        np.testing.assert_allclose(cam, ref_cam[:n], rtol=0, atol=1e-5 * scale)


def test_head_refused_with_reason() -> None:
    feats = _Features()
    with pytest.raises(UnsupportedHead, match=r"Softmax.*raw logits"):
        CamClassifier(feats, nn.Sequential(nn.Linear(16, 5), nn.Softmax(dim=1)), "features")
    with pytest.raises(UnsupportedHead, match=r"Conv1d.*no forward-only vector-Jacobian"):
        CamClassifier(feats, nn.Sequential(nn.Conv1d(16, 5, 1)), "features")
    with pytest.raises(UnsupportedHead, match=r"GELU.*tanh"):
        CamClassifier(feats, nn.Sequential(nn.Linear(16, 5), nn.GELU("tanh")), "x")
    with pytest.raises(UnsupportedHead, match=r"BatchNorm1d.*batch"):
        CamClassifier(feats, nn.Sequential(nn.BatchNorm1d(16, track_running_stats=False)), "x")
    with pytest.raises(UnsupportedHead, match=r"LayerNorm.*pooled channels"):
        model = CamClassifier(feats, nn.Sequential(nn.LayerNorm([4, 4]), nn.Linear(16, 5)), "x")
        model(torch.zeros(1, 3, 32, 32))
