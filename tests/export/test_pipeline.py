"""`edge export` end to end: real models, real ONNX Runtime, real images, a real bundle."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edge.bundle import load_bundle
from edge.cli import app
from edge.providers import target_providers
from edge.thresholds import Thresholds

pytest.importorskip("torch")

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
runner = CliRunner()


@pytest.fixture(scope="module")
def small_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "b"
    result = runner.invoke(
        app,
        [
            "export",
            "--target",
            "cpu",
            "--out",
            str(out),
            "--val-limit",
            "48",
            "--val",
            str(DATA / "imagenet-sample"),
        ],
    )
    assert result.exit_code == 0, result.output
    return out


def test_export_writes_a_verified_int8_bundle(small_bundle: Path) -> None:
    b = load_bundle(small_bundle)
    m = b.manifest
    assert m.target == "cpu" and m.classifier.precision == "int8"
    assert len(m.classifier.classes) == 1000
    assert m.classifier.cam_size == (7, 7)
    assert m.segmenter.in_classifier  # lite0_seg shares Lite0's backbone: one graph
    v = m.validation
    assert v["n_images"] == 48
    assert v["top1_agreement"] >= 0.9
    assert 0.0 <= v["overmap_drift_mean"] <= 0.1
    assert v["segmenter"]["mask_iou_vs_fp32"] > 0.8
    assert m.versions["onnxruntime"]
    # the providers and thresholds come from their one owner each on the device side
    assert m.providers == target_providers("cpu") == ["CPUExecutionProvider"]
    assert m.thresholds == Thresholds().as_dict()
    # nothing but the bundle's own files is left behind
    assert sorted(p.name for p in small_bundle.iterdir()) == [
        "classifier.onnx",
        "manifest.json",
        "segmenter.onnx",
    ]
    assert not [p for p in small_bundle.parent.iterdir() if p.name.startswith(".")]


def test_export_refuses_under_the_agreement_bar_and_keeps_the_old_bundle(
    small_bundle: Path, tmp_path: Path
) -> None:
    before = (small_bundle / "manifest.json").read_bytes()
    result = runner.invoke(
        app,
        [
            "export",
            "--out",
            str(small_bundle),
            "--val-limit",
            "16",
            "--min-agreement",
            "1.01",
            "--val",
            str(DATA / "imagenet-sample"),
        ],
    )
    assert result.exit_code == 1
    assert "agreement" in result.output
    assert (small_bundle / "manifest.json").read_bytes() == before
    load_bundle(small_bundle)


def test_export_without_torch_says_how_to_install(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['torchvision'] = None;"
        "from edge.cli import app; app(['export', '--out', sys.argv[1]])"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "b")], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "pip install 'overmap-edge[export]'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "b").exists()


def test_manifest_records_the_figures_as_json(small_bundle: Path) -> None:
    raw = json.loads((small_bundle / "manifest.json").read_text())
    assert raw["format"] == "overmap-bundle" and raw["format_version"] == 1
    for name in ("classifier", "segmenter"):
        assert len(raw[name]["file"]["sha256"]) == 64
