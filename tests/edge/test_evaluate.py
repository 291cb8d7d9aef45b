"""`edge evaluate` / `edge calibrate` internals on a real (tiny) bundle and real frames.

The JSON is the evidence: every figure must be recomputable from its per-frame records, and a
fusion written by calibrate must leave a bundle that still loads and verifies.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge import evaluate as ev
from edge.bundle import load_bundle
from edge.fusion import FEATURES
from edge.metrics import summarise

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
CAMTRAP = DATA / "camtrap"
PETS = DATA / "pets-masks"
CLASSES = ["empty", "deer", "fox", "human"]  # the tiny bundle's (tests/edge/conftest.py)


def _mlwic_csv(tmp_path: Path, n: int = 20) -> Path:
    """The first n MLWIC frames, in order; labels cycle over the tiny bundle's classes so that
    a random classifier is right on some frames and wrong on others."""
    src = CAMTRAP / "labels.csv"
    if not src.is_file():
        pytest.skip(f"reference data missing: {src}")
    with open(src, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["source"] == "mlwic_examples"][:n]
    out = tmp_path / "labels.csv"
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["file", "label", "camera_or_sequence"])
        for i, r in enumerate(rows):
            w.writerow([r["file"], CLASSES[i % len(CLASSES)], r["camera_or_sequence"]])
    return out


@pytest.fixture()
def bundle_copy(tiny_bundle: Path, tmp_path: Path) -> Path:
    """A private copy: calibrate rewrites the manifest, the session bundle must stay as is."""
    return Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))


@pytest.fixture()
def report(bundle_copy: Path, tmp_path: Path) -> dict:
    rows = ev.read_rows(_mlwic_csv(tmp_path), images_root=CAMTRAP)
    return ev.run_frames(rows, load_bundle(bundle_copy), start=12, mc_samples=5, batch=4)


def test_json_frames_and_figures_recomputed(report: dict, tmp_path: Path) -> None:
    fig = ev.figures(report["frames"])
    report["figures"] = fig
    path = ev.write_json(tmp_path / "out" / "r.json", report)
    data = json.loads(path.read_text(encoding="utf-8"))
    frames = data["frames"]
    assert len(frames) == 8 == fig["n"]
    for f in frames:
        assert {"file", "label", "prediction", "correct", "confidences"} <= set(f)
        assert f["prediction"] in CLASSES and f["correct"] == (f["prediction"] == f["label"])
        assert {"softmax", "overmap", "fused", "entropy", "mc_dropout"} <= set(f["confidences"])
        assert 0.0 <= f["confidences"]["overmap"] <= 1.0
        assert 0.0 < f["confidences"]["softmax"] <= 1.0
        assert "probs" not in f  # arrays stay out of the JSON
    # the background model had 12 frames to learn from: the later frames use it
    assert {f["mask_source"] for f in frames} == {"combined"}
    correct = np.array([f["correct"] for f in frames])
    assert 0 < correct.sum() < len(frames), "the test needs right and wrong frames"
    for name, row in data["figures"]["confidences"].items():
        s = np.array([f["confidences"][name] for f in frames])
        again = summarise({name: s}, correct)[name]
        for key, value in again.items():
            assert row[key] == pytest.approx(value, nan_ok=True), (name, key)
    table = ev.markdown_table(data)
    assert "| softmax |" in table and "| fused |" in table


def test_calibrate_writes_a_fusion_the_bundle_still_verifies(
    report: dict, bundle_copy: Path
) -> None:
    b = load_bundle(bundle_copy)
    params = ev.calibrate(report["frames"], b)
    assert params["chosen"] in ("fusion", "softmax")
    assert params["input_features"] == list(FEATURES)
    again = load_bundle(bundle_copy)  # checksums of the model files still match
    assert again.manifest.fusion == json.loads(json.dumps(params))
    # the stored fusion is what the scorer now applies
    rows = ev.read_rows(_mlwic_csv(bundle_copy.parent), images_root=CAMTRAP)
    after = ev.run_frames(rows, again, start=12, mc_samples=2, batch=4)
    before = {f["file"]: f for f in report["frames"]}
    for f in after["frames"]:
        assert f["confidences"]["softmax"] == pytest.approx(
            before[f["file"]]["confidences"]["softmax"], abs=1e-6
        )
    fused = np.array([f["confidences"]["fused"] for f in after["frames"]])
    assert np.all((fused >= 0) & (fused <= 1))


def test_true_masks_are_used_as_given(bundle_copy: Path, tmp_path: Path) -> None:
    src = PETS / "labels.csv"
    if not src.is_file():
        pytest.skip(f"reference data missing: {src}")
    with open(src, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "test"][:4]
    csv_path = tmp_path / "pets.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["file", "label", "mask", "camera_or_sequence"])
        w.writerows([r["file"], "deer", r["mask"], Path(r["file"]).stem] for r in rows)
    table = ev.read_rows(csv_path, images_root=PETS, masks_column="mask")
    out = ev.run_frames(table, load_bundle(bundle_copy), mc_samples=2)
    assert [f["mask_source"] for f in out["frames"]] == ["file"] * 4
    # the stretched trimap keeps the pet's share of the frame (fg_frac counts pet pixels)
    for f, r in zip(out["frames"], rows, strict=True):
        assert f["foreground"] == pytest.approx(float(r["fg_frac"]), abs=0.03)
        assert 0.0 <= f["confidences"]["overmap"] <= 1.0


def _recompute_curves(frames: list[dict], empty_classes: list[str]) -> dict:
    """The curves straight from a JSON's frames, with edge.metrics alone."""
    from edge.metrics import overlap_accuracy, overlap_trend

    out = {}
    for subset in ("all", "animal"):
        sub = [f for f in frames if subset == "all" or f["prediction"] not in empty_classes]
        s = np.array([f["confidences"]["overmap"] for f in sub], float)
        curve = overlap_accuracy(s, np.array([f["correct"] for f in sub], bool))
        out[subset] = (curve, overlap_trend(curve))
    return out


def test_evaluate_cli_reports_the_overlap_accuracy_curve(tiny_bundle: Path, tmp_path: Path) -> None:
    """`edge evaluate --json --plots` on 16 real MLWIC frames: the JSON holds the curve for all
    frames and for animal predictions, recomputed from its own frames to the same numbers."""
    from typer.testing import CliRunner

    from edge.cli import app

    labels = _mlwic_csv(tmp_path, n=24)
    out = tmp_path / "r.json"
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            str(labels),
            "--bundle",
            str(tiny_bundle),
            "--images-root",
            str(CAMTRAP),
            "--rows",
            "8:24",
            "--json",
            str(out),
            "--plots",
            str(tmp_path / "plots"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "accuracy by Over-MAP decile" in result.output and "Spearman" in result.output
    data = json.loads(out.read_text(encoding="utf-8"))
    frames = data["frames"]
    assert len(frames) == 16 and data["empty_classes"] == ["empty"]
    curves, trends = data["overlap_accuracy"], data["overlap_trend"]
    assert set(curves) == {"all", "animal"} == set(trends)
    n_animal = sum(f["prediction"] != "empty" for f in frames)
    assert sum(b["count"] for b in curves["all"]) == 16
    assert sum(b["count"] for b in curves["animal"]) == n_animal
    assert len(curves["all"]) == 10
    again = _recompute_curves(frames, data["empty_classes"])
    for subset, (curve, trend) in again.items():
        assert len(curve) == len(curves[subset])
        for got, want in zip(curves[subset], curve, strict=True):
            for key, value in want.items():
                assert got[key] == pytest.approx(value, nan_ok=True), (subset, key)
        for key, value in trend.items():
            assert trends[subset][key] == pytest.approx(value, nan_ok=True), (subset, key)
    assert (tmp_path / "plots" / "overlap_accuracy.png").read_bytes()[:4] == b"\x89PNG"
    md = ev.markdown_overlap(data)
    assert md.count("| 10 |") == 2 and "animal predictions" in md


def test_overlap_curves_animal_subset_leaves_out_empty_predictions() -> None:
    frames = [
        {"prediction": p, "correct": c, "confidences": {"overmap": o}}
        for p, c, o in [
            ("empty", True, 0.0),
            ("empty", True, 0.0),
            ("deer", False, 0.2),
            ("deer", True, 0.9),
            ("fox", True, 0.8),
        ]
    ]
    got = ev.overlap_curves(frames, ["empty"], bins=2)
    assert [b["count"] for b in got["overlap_accuracy"]["all"]] == [3, 2]
    animal = got["overlap_accuracy"]["animal"]
    assert [(b["count"], b["correct"]) for b in animal] == [(2, 1), (1, 1)]
    assert got["overlap_trend"]["animal"]["top_minus_bottom"] == pytest.approx(0.5)
    none = ev.overlap_curves(frames[:2], ["empty"])
    assert none["overlap_accuracy"]["animal"] == [] and none["overlap_trend"]["animal"]["bins"] == 0


def test_side_by_side_keeps_each_maps_curve_recomputable(report: dict, tmp_path: Path) -> None:
    """--map both's layout: curves keyed by map name, each map's frames under by_map; the
    second map here is the first with its Over-MAP values reversed (a different curve)."""
    import copy

    reports = {"cam": report, "attention": copy.deepcopy(report)}
    for f in reports["attention"]["frames"]:
        f["confidences"]["overmap"] = 1.0 - f["confidences"]["overmap"]
    for r in reports.values():
        r.update(figures=ev.figures(r["frames"]), **ev.overlap_curves(r["frames"], ["empty"]))
    both = ev.side_by_side(reports)
    assert both["frames"] is report["frames"] and both["maps"] == ["cam", "attention"]
    data = json.loads(ev.write_json(tmp_path / "both.json", both).read_text(encoding="utf-8"))
    assert set(data["overlap_accuracy"]) == {"cam", "attention"}
    for m in ("cam", "attention"):
        frames = data["by_map"][m]["frames"]
        assert all("probs" not in f for f in frames)
        again = _recompute_curves(frames, ["empty"])
        for subset, (curve, _) in again.items():
            got = data["overlap_accuracy"][m][subset]
            assert [b["count"] for b in got] == [b["count"] for b in curve]
            assert [b["correct"] for b in got] == [b["correct"] for b in curve]
    md = ev.markdown_overlap(data)
    assert "map cam, all" in md and "map attention, animal" in md
