"""Shared pieces for the export tests: real ImageNet sample photos and Grad-CAM references.

The references are the textbook Grad-CAM with torch autograd (a hook on the map's layer and a
backward pass of the top logit) and captum's LayerGradCam, to hold the forward-only map to.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"

IMAGENET = SHARED / "imagenet-sample"


def imagenet_rows() -> list[dict[str, str]]:
    with open(IMAGENET / "labels.csv", newline="") as f:
        return sorted(csv.DictReader(f), key=lambda r: int(r["class_id"]))


def minmax(maps: np.ndarray) -> np.ndarray:
    """Each map scaled to [0, 1] (a flat map stays 0), so maps compare whatever their scale."""
    flat = maps.reshape(len(maps), -1).astype(np.float64)
    lo, hi = flat.min(1, keepdims=True), flat.max(1, keepdims=True)
    return ((flat - lo) / np.maximum(hi - lo, 1e-30)).reshape(maps.shape)


def gradcam_autograd(model: nn.Module, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(logits, Grad-CAM [N,h,w]) by autograd at `model.features`'s output, top class each."""
    acts: dict[str, torch.Tensor] = {}

    def keep(_m: nn.Module, _i: object, out: torch.Tensor) -> None:
        out.retain_grad()
        acts["a"] = out

    handle = model.features.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            logits, _ = model(x.clone().requires_grad_(True))
            top = logits.argmax(1)
            logits.gather(1, top[:, None]).sum().backward()
    finally:
        handle.remove()
    a = acts["a"]
    assert a.grad is not None
    alpha = a.grad.mean(dim=(2, 3))
    cam = torch.relu((alpha[:, :, None, None] * a).sum(1))
    return logits.detach().numpy(), cam.detach().numpy()


def gradcam_captum(model: nn.Module, x: torch.Tensor, top: np.ndarray) -> np.ndarray:
    """captum's LayerGradCam at `model.features` for class `top` of each image, [N,h,w]."""
    from captum.attr import LayerGradCam

    lgc = LayerGradCam(lambda inp: model(inp)[0], model.features)
    with torch.enable_grad():
        att = lgc.attribute(x, target=torch.from_numpy(top).tolist(), relu_attributions=True)
    return att.detach().numpy()[:, 0]


def calibrate_batchnorm(model: nn.Module, x: torch.Tensor) -> None:
    """Give a randomly initialised model BatchNorm statistics from real images, so its
    activations have the scale of a trained one instead of shrinking to ~1e-11."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a plain average over what is seen
    model.train()
    with torch.no_grad():
        model(x)
    model.eval()


@pytest.fixture(scope="session")
def imagenet_batch() -> Callable[[int, int], list[np.ndarray]]:
    """`load(start, n)`: n decoded RGB photos from the ImageNet sample, every 50th class."""
    from edge.decode import load_image

    rows = imagenet_rows()

    def load(start: int, n: int) -> list[np.ndarray]:
        return [load_image(IMAGENET / r["file"]) for r in rows[start::50][:n]]

    return load


@pytest.fixture(scope="session")
def lite0_source():  # type: ignore[no-untyped-def]
    """The default classifier: the real ImageNet Lite0 as a ClassifierSource, built once."""
    from export.models import build_classifier

    return build_classifier()


@pytest.fixture(scope="session")
def lite0_onnx(lite0_source, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
    """The default classifier exported to ONNX once for the session."""
    from export.onnx_io import export_classifier_onnx

    path = tmp_path_factory.mktemp("lite0") / "classifier.onnx"
    return export_classifier_onnx(lite0_source.model, path, lite0_source.input.size)


def ort_session(path: Path):  # type: ignore[no-untyped-def]
    """A real ONNX Runtime CPU session on two threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="session")
def ref() -> SimpleNamespace:
    """The helpers above, as a fixture: tests/edge has a conftest too, so `import conftest`
    would be ambiguous."""
    return SimpleNamespace(
        minmax=minmax,
        gradcam_autograd=gradcam_autograd,
        gradcam_captum=gradcam_captum,
        calibrate_batchnorm=calibrate_batchnorm,
        ort_session=ort_session,
        imagenet_rows=imagenet_rows,
    )
