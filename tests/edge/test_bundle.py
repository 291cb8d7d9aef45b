"""load_bundle and `edge bundle DIR` on a real exported bundle and damaged copies of it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edge.bundle import BundleError, load_bundle
from edge.cli import app


@pytest.fixture
def copy(tiny_bundle: Path, tmp_path: Path) -> Path:
    """A private copy of the good bundle, free to damage."""
    return Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))


def _manifest(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text())


def test_good_bundle_loads(tiny_bundle: Path) -> None:
    b = load_bundle(tiny_bundle)
    assert b.manifest.classifier.classes == ["empty", "deer", "fox", "human"]
    assert b.classifier_path.is_file() and b.segmenter_path.is_file()


def test_flipped_byte_is_refused(copy: Path) -> None:
    path = copy / "classifier.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"classifier\.onnx.*sha256.*tampered"):
        load_bundle(copy)


def test_truncated_file_is_refused(copy: Path) -> None:
    path = copy / "segmenter.onnx"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(BundleError, match=r"segmenter\.onnx.*bytes.*truncated"):
        load_bundle(copy)


def test_missing_file_is_refused(copy: Path) -> None:
    (copy / "classifier.onnx").unlink()
    with pytest.raises(BundleError, match=r"classifier\.onnx: missing"):
        load_bundle(copy)


def test_wrong_format_version_is_refused(copy: Path) -> None:
    raw = _manifest(copy)
    raw["format_version"] = 99
    (copy / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(BundleError, match=r"manifest\.json: bundle format version 99"):
        load_bundle(copy)


def test_manifest_not_json_is_refused(copy: Path) -> None:
    (copy / "manifest.json").write_text("{ this is not json")
    with pytest.raises(BundleError, match=r"manifest\.json: not readable JSON"):
        load_bundle(copy)


def test_manifest_unknown_key_is_refused(copy: Path) -> None:
    raw = _manifest(copy)
    raw["classifier"]["colour"] = "RGB"
    (copy / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(BundleError, match=r"invalid manifest[\s\S]*colour"):
        load_bundle(copy)


def test_missing_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="no such bundle folder"):
        load_bundle(tmp_path / "nowhere")


def test_cli_shows_a_good_bundle(tiny_bundle: Path) -> None:
    result = CliRunner().invoke(app, ["bundle", str(tiny_bundle)], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    out = result.output
    for text in ("tiny-cnn", "tiny-seg", "98.5 %", "87.5 %", "0.993", "0.004", "verified"):
        assert text in out, text
    assert "4: empty, deer, fox, human" in out
    sha = load_bundle(tiny_bundle).manifest.classifier.file.sha256[:12]
    assert sha in out


def test_cli_refuses_a_tampered_bundle(copy: Path) -> None:
    path = copy / "classifier.onnx"
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    result = CliRunner().invoke(app, ["bundle", str(copy)], env={"COLUMNS": "200"})
    assert result.exit_code == 1
    assert "bundle refused" in result.output and "classifier.onnx" in result.output
    assert "verified" not in result.output


def test_cli_shows_a_bad_provider_setting_instead_of_crashing(
    tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OVERMAP_PROVIDERS", "cuda,warp")
    result = CliRunner().invoke(app, ["bundle", str(tiny_bundle)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "unknown execution provider 'warp'" in result.output


@pytest.mark.parametrize(
    "fusion",
    [
        {"kind": "logistic", "features": ["max_softmax"], "mean": [0.5]},  # no scale, coef
        {"kind": "isotonic", "features": ["max_softmax"], "x": [0, 1], "y": [0.2]},
        {"kind": "bayes"},
        {
            "kind": "logistic",
            "features": ["max_softmax"],
            "mean": [0],
            "scale": [0],
            "coef": [1],
            "intercept": 0,
        },  # a zero scale: no finite confidence
    ],
)
def test_malformed_fusion_parameters_are_refused_at_load(copy: Path, fusion: dict) -> None:
    path = copy / "manifest.json"
    m = json.loads(path.read_text())
    m["fusion"] = fusion
    path.write_text(json.dumps(m))
    with pytest.raises(BundleError, match="fusion"):
        load_bundle(copy)


def test_fitted_fusion_parameters_load(copy: Path) -> None:
    path = copy / "manifest.json"
    m = json.loads(path.read_text())
    m["fusion"] = {
        "kind": "logistic",
        "features": ["max_softmax", "overmap"],
        "mean": [0.5, 0.2],
        "scale": [0.2, 0.1],
        "coef": [1.5, 0.3],
        "intercept": -0.2,
    }
    path.write_text(json.dumps(m))
    assert load_bundle(copy).manifest.fusion["kind"] == "logistic"


@pytest.mark.parametrize(
    "key, value", [("tag", 1.5), ("empty", -0.1), ("empty_foreground", float("nan"))]
)
def test_thresholds_out_of_range_are_refused_at_load(copy: Path, key: str, value: float) -> None:
    path = copy / "manifest.json"
    m = json.loads(path.read_text())
    m["thresholds"] = {"tag": 0.7, "empty": 0.6, "empty_foreground": 0.02, key: value}
    path.write_text(json.dumps(m))
    with pytest.raises(BundleError, match=rf"thresholds[\s\S]*threshold {key} = "):
        load_bundle(copy)
    m["thresholds"][key] = 0.5  # the same bundle with the key in range loads
    path.write_text(json.dumps(m))
    assert load_bundle(copy).manifest.thresholds[key] == 0.5
