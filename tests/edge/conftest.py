"""A real, small bundle built once per session: tiny torch models exported to ONNX.

The models are random but real: the classifier is a conv stack with a linear head wrapped in
`export.cam.CamClassifier` (outputs `logits` and `cam`), the segmenter a conv with a sigmoid
(output `foreground`). Exporting them exercises the same ONNX path as `edge export` in a
second, so every edge test runs against real files and real ONNX Runtime sessions.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from edge.bundle import (
    FORMAT_VERSION,
    ClassifierSpec,
    InputSpec,
    Manifest,
    SegmenterSpec,
    file_entry,
    write_manifest,
)

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"

DATA = SHARED
CAMTRAP = DATA / "camtrap"
IR_FRAME = CAMTRAP / "peru_s90_animl/S90_SDZG1/EK000004.JPG"  # night infrared, greyscale
COLOUR_FRAME = CAMTRAP / "peru_s90_animl/S90_SDZG1/EK000001.JPG"  # day, colour
CLASSES = ["empty", "deer", "fox", "human"]
VALIDATION = {
    "top1_agreement": 0.985,
    "top1_accuracy_fp32": 0.875,
    "top1_accuracy_onnx": 0.87,
    "cam_correlation": 0.993,
    "overmap_drift_mean": 0.004,
}


def _export(
    model: object, path: Path, size: tuple[int, int], outputs: list[str], dynamic: bool = True
) -> None:
    import torch

    x = torch.rand(2, 3, *size)
    axes = {"image": {0: "batch"}} | {name: {0: "batch"} for name in outputs}
    axes = axes if dynamic else None
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice
        warnings.simplefilter("ignore", DeprecationWarning)
        _onnx_export(torch, model, x, path, outputs, axes)


def _onnx_export(torch: Any, model: Any, x: Any, path: Path, outputs: list[str], axes: Any) -> None:
    torch.onnx.export(
        model,
        (x,),
        str(path),
        input_names=["image"],
        output_names=outputs,
        dynamic_axes=axes,
        opset_version=17,
        dynamo=False,
    )


def build_bundle(
    root: Path,
    *,
    size: tuple[int, int] = (64, 64),
    seg_size: tuple[int, int] | None = None,
    seg_resize: str = "stretch",
    cam_outputs: tuple[str, str] = ("logits", "cam"),
    dynamic: bool = True,
    learnable: bool = False,
) -> Path:
    """Export a tiny classifier + segmenter into `root` and write its manifest.

    `seg_size`/`seg_resize` let a test give the segmenter its own geometry; `cam_outputs`
    and `dynamic=False` (a batch fixed at 2) export a classifier that breaks the contract.
    `learnable`: the classifier also returns `features` [N,16] and `fmap` [N,16,h,w], what a
    learned head (`edge learn`) is fitted on and applied to.
    """
    torch = pytest.importorskip("torch")
    from torch import nn

    from export.cam import CamClassifier

    torch.manual_seed(0)
    root.mkdir(parents=True, exist_ok=True)
    features = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(),
    )
    classifier = CamClassifier(features, nn.Linear(16, len(CLASSES)), "features").eval()
    outputs = list(cam_outputs)
    if learnable:
        classifier, outputs = _WithFeatures(classifier).eval(), [*outputs, "features", "fmap"]
    segmenter = nn.Sequential(nn.Conv2d(3, 1, 3, stride=4, padding=1), nn.Sigmoid()).eval()
    seg_size = seg_size or size
    with torch.no_grad():
        _export(classifier, root / "classifier.onnx", size, outputs, dynamic)
        _export(segmenter, root / "segmenter.onnx", seg_size, ["foreground"])
    lite = InputSpec(size=size, mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0))
    imagenet = InputSpec(
        size=seg_size,
        mean=(123.675, 116.28, 103.53),
        std=(58.395, 57.12, 57.375),
        resize=seg_resize,  # type: ignore[arg-type]
    )
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        target="cpu",
        providers=["CPUExecutionProvider"],
        classifier=ClassifierSpec(
            file=file_entry(root, "classifier.onnx"),
            name="tiny-cnn",
            input=lite,
            classes=CLASSES,
            empty_classes=["empty"],
            human_classes=["human"],
            cam_layer="features",
            cam_size=(size[0] // 4, size[1] // 4),
            precision="fp32",
        ),
        segmenter=SegmenterSpec(
            file=file_entry(root, "segmenter.onnx"),
            name="tiny-seg",
            input=imagenet,
            output_size=(seg_size[0] // 4, seg_size[1] // 4),
            precision="fp32",
        ),
        thresholds={"empty": 0.8, "tag": 0.6},
        validation=VALIDATION,
        versions={"torch": torch.__version__, "overmap-edge": "0.1.0"},
    )
    write_manifest(root, manifest)
    return root


def _WithFeatures(classifier: Any) -> Any:
    """The classifier with its pooled vector and map layer as two more outputs."""
    from torch import nn

    class WithFeatures(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.classifier = classifier

        def forward(self, x: Any) -> tuple[Any, ...]:
            a = self.classifier.features(x)
            logits, cam = self.classifier.from_features(a)
            return logits, cam, a.mean(dim=(2, 3)), a

    return WithFeatures()


@pytest.fixture(scope="session")
def colour_frame() -> Path:
    """A real day-time colour camera-trap frame (768x576 JPEG)."""
    if not COLOUR_FRAME.is_file():
        pytest.skip(f"reference data missing: {COLOUR_FRAME}")
    return COLOUR_FRAME


@pytest.fixture(scope="session")
def ir_frame() -> Path:
    """A real night infrared frame: greyscale content stored as a colour JPEG."""
    if not IR_FRAME.is_file():
        pytest.skip(f"reference data missing: {IR_FRAME}")
    return IR_FRAME


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A verified bundle folder (classifier and segmenter share size and resize)."""
    return build_bundle(tmp_path_factory.mktemp("bundle"))


@pytest.fixture(scope="session")
def bundle_factory(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Build a variant bundle in a fresh folder: `bundle_factory(seg_size=(48, 40))`."""

    def make(**kwargs: object) -> Path:
        return build_bundle(tmp_path_factory.mktemp("variant"), **kwargs)  # type: ignore[arg-type]

    return make


def spawn_watcher(
    bundle: Path, inbox: Path, out: Path, *extra: str, capture: bool = False
) -> subprocess.Popen:
    """`edge watch INBOX` as its own process (no dashboard, a short settle), to be killed;
    `capture`: its output kept (as text) for the test to read."""
    cmd = [sys.executable, "-m", "edge.cli", "watch", str(inbox), "--out", str(out)]
    cmd += ["--bundle", str(bundle), "--no-tui", "--settle", "0.1", *extra]
    if capture:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
