"""Fixtures for the quantization and validation tests: real exports of the real Lite0.

Imported by name from the test modules (not a conftest.py, so other export tests do not pay
for an export they do not use). Everything is session-scoped: one FP32 export, one INT8 model.
"""

from __future__ import annotations

import csv
import functools
from pathlib import Path

import pytest
import torch

from edge.bundle import InputSpec
from export.calibration import CalibrationFrames, builtin_calibration_dir
from export.cam import CamClassifier
from export.lite0 import MEAN, STD, load_imagenet_lite0
from export.onnx_io import export_classifier_onnx
from export.quantize import quantize_int8

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"

IMAGENET = SHARED / "imagenet-sample"
SPEC = InputSpec(size=(224, 224), mean=MEAN, std=STD, resize="center_crop")


def imagenet_subset(n: int, *, step: int = 15) -> tuple[list[Path], list[int]]:
    """n imagenet-sample images spread over the classes (every `step`-th class id)."""
    with open(IMAGENET / "labels.csv", newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: int(r["class_id"]))
    picked = rows[::step][:n]
    return [IMAGENET / r["file"] for r in picked], [int(r["class_id"]) for r in picked]


@functools.cache
def _cam_model() -> CamClassifier:
    torch.set_num_threads(2)
    m = load_imagenet_lite0()
    return CamClassifier(m.features, m.classifier, "features").eval()


@pytest.fixture(scope="session")
def cam_model() -> CamClassifier:
    return _cam_model()


_CACHE: dict[str, Path] = {}  # one export per session, whichever module asks first


@pytest.fixture(scope="session")
def fp32_onnx(cam_model: CamClassifier, tmp_path_factory: pytest.TempPathFactory) -> Path:
    if "fp32" not in _CACHE:
        path = tmp_path_factory.mktemp("export") / "fp32.onnx"
        _CACHE["fp32"] = export_classifier_onnx(cam_model, path, SPEC.size)
    return _CACHE["fp32"]


@pytest.fixture(scope="session")
def int8_onnx(fp32_onnx: Path) -> tuple[Path, dict]:
    """The shipping recipe, calibrated on the built-in frames (none of them imagenet-sample)."""
    out = fp32_onnx.parent / "int8.onnx"
    reader = CalibrationFrames(builtin_calibration_dir(), SPEC, progress=False)
    recipe = quantize_int8(fp32_onnx, out, reader)
    return out, recipe
