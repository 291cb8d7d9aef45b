"""edge.audit on real frames with the shipped bundle: a wrong label comes out on top, the JSON's
suspicion follows from its cues, the page shows the suspects, and the comparison is exact."""

from __future__ import annotations

import base64
import csv
import json
import re
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from edge.audit import (
    audit,
    extract,
    fold_ids,
    looked_away,
    suspicion_from_cues,
    topk_precision_recall,
)
from edge.bundle import default_bundle, load_bundle
from edge.cli import app
from edge.evaluate import Row

PETS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "pets37" / "trainval"
BREEDS = ("Abyssinian", "pug", "samoyed")  # a cat, a flat-faced dog, a white dog
PER_BREED = 10
runner = CliRunner()


def _frames() -> list[tuple[str, str]]:
    """(file relative to PETS, breed): the first PER_BREED of each breed, in CSV order."""
    with open(PETS / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for b in BREEDS:
        out += [(r["file"], b) for r in rows if r["class_name"] == b][:PER_BREED]
    return out


@pytest.fixture(scope="module")
def frames() -> list[tuple[str, str]]:
    if not (PETS / "labels.csv").exists():
        pytest.skip(f"{PETS} is not there")
    return _frames()


FLIPPED = 3  # a pug labelled samoyed (row 10 + 3)


@pytest.fixture(scope="module")
def extracted(frames):
    examples = [Row(PETS / f, lab) for f, lab in frames]
    return extract(examples, load_bundle(default_bundle()))


def test_a_flipped_label_ranks_near_the_top(frames, extracted):
    index = {b: i for i, b in enumerate(BREEDS)}
    y = np.array([index[lab] for _, lab in frames])
    i = PER_BREED + FLIPPED
    y[i] = index["samoyed"]
    cues = audit(extracted.features, extracted.fmap, y, extracted.masks, n_classes=3)
    rank = int((cues["suspicion"] > cues["suspicion"][i]).sum())  # 0 = the most suspicious
    assert rank <= 2, (rank, cues["suspicion"].round(2))
    assert cues["p_label"][i] < 0.5 and cues["predicted"][i] == index["pug"]
    assert cues["suspicion"].min() >= 0 and cues["suspicion"].max() <= 1
    assert cues["maps"].shape == (len(y), 7, 7)


def test_an_empty_label_is_judged_by_how_empty_its_mask_is():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 8)).astype(np.float32)
    X[:10] += 2.0
    y = np.array([0] * 10 + [1] * 10)  # class 1 names no object
    fmap = np.abs(rng.normal(size=(20, 8, 7, 7))).astype(np.float32)
    masks = np.zeros((20, 28, 28), np.float32)
    masks[:10, 7:21, 7:21] = 1.0
    masks[12, :, :14] = 1.0  # an "empty" frame that holds an object
    cues = audit(X, fmap, y, masks, n_classes=2, empty_classes=[1])
    assert cues["overmap_label"][12] == pytest.approx(0.5)
    assert cues["overmap_label"][10] == 1.0 and cues["foreground"][12] == pytest.approx(0.5)


@pytest.fixture(scope="module")
def cli_run(frames, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("audit")
    labels = tmp / "labels.csv"
    with open(labels, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "label"])
        for k, (file, lab) in enumerate(frames):
            w.writerow([file, "samoyed" if k == PER_BREED + FLIPPED else lab])
    js, page = tmp / "a.json", tmp / "a.html"
    result = runner.invoke(
        app,
        ["audit", str(labels), "--images-root", str(PETS), "--json", str(js), "--html", str(page)]
        + ["--top", "5"],
    )
    assert result.exit_code == 0, result.output
    return json.loads(js.read_text()), page.read_text(), result.output


def test_the_json_suspicion_follows_from_its_cues(cli_run):
    report, _, output = cli_run
    rows = report["examples"]
    assert len(rows) == 3 * PER_BREED
    s = np.array([r["suspicion"] for r in rows])
    assert (np.diff(s) <= 0).all()  # most suspicious first
    w = report["weights"]
    again = suspicion_from_cues(
        np.array([r["p_label"] for r in rows]),
        np.array([r["overmap_label"] for r in rows]),
        weights=(w["p_label"], w["overmap_label"]),
    )
    np.testing.assert_allclose(again, s, atol=1e-12)
    assert {"file", "label", "predicted", "p_predicted", "foreground", "fold"} <= set(rows[0])
    flipped = [r for r in rows if r["file"].endswith(_frames()[PER_BREED + FLIPPED][0])]
    assert flipped[0]["rank"] <= 3 and flipped[0]["predicted"] == "pug"
    assert "json:" in output


def test_labels_learnt_off_the_object_are_listed_apart(cli_run):
    report, page, _ = cli_run
    rows = report["examples"]
    agree = [r for r in rows if r["predicted"] == r["label"]]
    assert agree and all(r["looked_away"] is not None for r in agree)
    assert all(r["looked_away"] is None for r in rows if r["predicted"] != r["label"])
    furthest = min(agree, key=lambda r: r["overmap_label"])  # its map least on the object
    assert furthest["looked_away"] == 1.0
    assert 'id="away"' in page and f'id="away-{furthest["rank"]}"' in page
    again = looked_away(
        np.array([r["predicted"] for r in rows]),
        np.array([r["label"] for r in rows]),
        np.array([r["overmap_label"] for r in rows]),
    )
    got = np.array([np.nan if r["looked_away"] is None else r["looked_away"] for r in rows])
    np.testing.assert_allclose(again, got, atol=1e-12)


def test_the_page_lists_the_top_suspects_and_its_images_decode(cli_run):
    report, page, _ = cli_run
    for r in report["examples"][:5]:
        assert f'id="rank-{r["rank"]}"' in page and r["file"] in page
    assert 'id="rank-6"' not in page
    images = re.findall(r"data:image/jpeg;base64,([A-Za-z0-9+/=]+)", page)
    assert len(images) == 10  # five suspects, then five labels learnt off the object
    for b64 in images:
        img = cv2.imdecode(np.frombuffer(base64.b64decode(b64), np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and img.shape[1] == 448


def test_a_missing_csv_is_named_plainly(tmp_path: Path):
    missing = tmp_path / "nope.csv"
    result = runner.invoke(
        app, ["audit", str(missing), "--json", str(tmp_path / "a.json"), "--html", "a.html"]
    )
    assert result.exit_code == 2
    assert "no such file" in result.output and "nope.csv" in result.output
    assert not (tmp_path / "a.json").exists()


def test_a_csv_without_the_label_column_is_named(tmp_path: Path):
    labels = tmp_path / "l.csv"
    labels.write_text("file,class_name\na.jpg,x\nb.jpg,y\n")
    result = runner.invoke(
        app, ["audit", str(labels), "--json", str(tmp_path / "a.json"), "--html", "a.html"]
    )
    assert result.exit_code == 2 and "missing columns ['label']" in result.output


def test_topk_precision_recall_on_a_hand_made_case():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    flips = np.array([1, 0, 1, 0, 0, 1], bool)
    assert topk_precision_recall(scores, flips, 3) == (2 / 3, 2 / 3)
    assert topk_precision_recall(scores, flips, 1) == (1.0, 1 / 3)
    assert topk_precision_recall(scores, flips, 6) == (0.5, 1.0)
    with pytest.raises(ValueError, match="k must be"):
        topk_precision_recall(scores, flips, 0)


def test_the_cleanlab_comparison_is_exact_on_a_hand_made_case():
    pytest.importorskip("cleanlab")
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from bench_audit import compare

    # 12 examples, 3 classes; rows 2 and 7 carry labels their probabilities contradict
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])
    probs = np.full((12, 3), 0.05)
    probs[np.arange(12), y] = 0.9
    noisy = y.copy()
    noisy[2], noisy[7] = 1, 0
    flipped = noisy != y
    om = np.full(12, 0.8)
    om[7] = 0.1  # the audit's attention cue also points at row 7
    suspicion = suspicion_from_cues(probs[np.arange(12), noisy], om)
    scores = compare(noisy, probs, suspicion, om)
    for name in ("audit", "cleanlab_self_confidence", "combined"):
        assert topk_precision_recall(scores[name], flipped, 2) == (1.0, 1.0), name
    assert topk_precision_recall(scores["overmap_only"], flipped, 2) == (0.5, 0.5)
    assert set(np.flatnonzero(scores["cleanlab_find_label_issues"])) == {2, 7}


def test_folds_are_stratified_and_seeded():
    y = np.repeat(np.arange(3), [10, 10, 3])
    f = fold_ids(y, folds=5, seed=1)
    for c in (0, 1):
        assert np.bincount(f[y == c], minlength=5).tolist() == [2] * 5
    assert (f == fold_ids(y, folds=5, seed=1)).all()
    with pytest.raises(ValueError, match="folds"):
        fold_ids(y, folds=1)


def test_suspicion_refuses_bad_weights():
    with pytest.raises(ValueError, match="weights"):
        suspicion_from_cues(np.ones(3), np.ones(3), weights=(0, 0))
    np.testing.assert_allclose(
        suspicion_from_cues(np.array([0.9, 0.1]), np.array([0.1, 0.9]), weights=(1, 0)), [0, 1]
    )


def test_true_masks_from_a_column_replace_the_segmenters(tmp_path: Path):
    masks = PETS.parents[1] / "pets-masks"
    if not (masks / "labels.csv").exists():
        pytest.skip(f"{masks} is not there")
    with open(masks / "labels.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "trainval"]
    picked = [r for b in ("Abyssinian", "Bengal") for r in rows if r["class_name"] == b][:5]
    picked += [r for r in rows if r["class_name"] == "american_bulldog"][:5]
    labels = tmp_path / "labels.csv"
    with open(labels, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "label", "mask"])
        w.writerows([r["file"], r["class_name"], r["mask"]] for r in picked)
    js = tmp_path / "a.json"
    argv = ["audit", str(labels), "--images-root", str(masks), "--masks", "mask"]
    result = runner.invoke(app, argv + ["--json", str(js), "--html", str(tmp_path / "a.html")])
    assert result.exit_code == 0, result.output
    got = {Path(r["file"]).name: r for r in json.loads(js.read_text())["examples"]}
    assert {r["mask_source"] for r in got.values()} == {"file"}
    for r in picked:  # the trimap's pet share, within the letterbox's padding and resizing
        share = got[Path(r["file"]).name]["foreground"]
        assert 0 < share <= float(r["fg_frac"]) + 0.02
