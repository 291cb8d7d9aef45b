"""`edge simulate`: a labelled stream through the watcher's decisions with a simulated reviewer,
on the tiny learnable bundle and real camera-trap frames (day frames "deer", night "human")."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import CAMTRAP, CLASSES
from typer.testing import CliRunner

from edge.bundle import load_bundle
from edge.cli import app
from edge.decode import load_image
from edge.learn import add_first_labels
from edge.runtime import Runtime
from edge.simulate import figures, simulate


@pytest.fixture(scope="module")
def learnable(bundle_factory: Callable[..., Path]) -> Path:
    return bundle_factory(learnable=True)


@pytest.fixture(scope="module")
def labels_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """80 real frames in the shared data's order, with a label the tiny bundle can learn."""
    src = CAMTRAP / "labels.csv"
    if not src.is_file():
        pytest.skip(f"reference data missing: {src}")
    with src.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["source"] == "peru_s90_animl"][:80]
    path = tmp_path_factory.mktemp("sim") / "labels.csv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, ["file", "source", "camera_or_sequence", "label", "datetime"])
        w.writeheader()
        for r in rows:
            w.writerow(
                {
                    "file": r["file"],
                    "source": r["source"],
                    "camera_or_sequence": r["camera_or_sequence"],
                    "label": "deer" if r["day_or_night"] == "day" else "human",
                    "datetime": r["datetime"],
                }
            )
    return path


def test_figures_recompute_from_the_frames_list(learnable: Path, labels_csv: Path) -> None:
    r = simulate(labels_csv, CAMTRAP, learnable, every=10, threads=1)
    frames = r["frames"]
    n = len(frames)
    assert n == r["n_frames"] == 80
    reviewed = sum(f["reviewed"] for f in frames)
    wrong = sum(not f["reviewed"] and f["final_label"] != f["label"] for f in frames)
    non_empty = [f for f in frames if f["label"] != "empty"]
    assert r["reviewed_share"] == pytest.approx(reviewed / n)
    assert r["reviewed_by_quarter"] == pytest.approx(
        [sum(f["reviewed"] for f in frames[i : i + 20]) / 20 for i in range(0, 80, 20)]
    )
    assert r["residual_error"] == pytest.approx(wrong / n)
    assert r["empty_lost"] == pytest.approx(
        sum(f["decision"] == "empty" for f in non_empty) / len(non_empty)
    )
    for f in frames:
        assert f["reviewed"] == (f["decision"] == "review")
        assert set(f) >= {"file", "label", "final_label", "reviewed", "decision"}
        if f["reviewed"]:
            assert f["final_label"] == f["label"]  # the reviewer's answer is the truth
    assert [f["file"] for f in frames] == [row["file"] for row in csv.DictReader(labels_csv.open())]
    b = r["baselines"]
    assert b["review_all"]["reviewed_share"] == 1.0 and b["review_all"]["residual_error"] == 0
    for name in ("softmax_0.7_no_learning", "shipped_no_learning"):
        assert set(b[name]) >= {"reviewed_share", "residual_error", "empty_lost"}
    # learning steps ran on the answers as they came, each with its figures
    assert r["steps"] and all("install" in s and "answers" in s for s in r["steps"])
    assert r["installs"] == sum(bool(s["install"]) for s in r["steps"])


def test_learning_changes_the_decisions_and_never_on_a_worse_step(
    learnable: Path, labels_csv: Path
) -> None:
    fixed = simulate(labels_csv, CAMTRAP, learnable, every=0, threads=1)
    learned = simulate(labels_csv, CAMTRAP, learnable, every=10, threads=1)
    assert not fixed["steps"] and fixed["installs"] == 0
    # with no learning the run is the bundle as shipped, measured in the same run
    same = ("reviewed_share", "residual_error", "empty_lost")
    assert {k: fixed[k] for k in same} == {
        k: fixed["baselines"]["shipped_no_learning"][k] for k in same
    }
    assert learned["installs"] >= 1
    for s in learned["steps"]:
        if s["install"]:
            assert s["candidate"]["cost"] < s["current"]["cost"]
    # the random tiny head is wrong about half the time; the learned one is told the truth
    assert (
        learned["residual_error"] < fixed["residual_error"]
        or learned["reviewed_share"] < fixed["reviewed_share"]
    )


def test_the_streams_own_frames_are_left_out_of_the_first_labels(
    learnable: Path, labels_csv: Path, tmp_path: Path
) -> None:
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(learnable, bundle)
    rows = list(csv.DictReader(labels_csv.open()))
    rt = Runtime.from_bundle(load_bundle(bundle), threads=1, features=True)
    feats = rt.run([load_image(CAMTRAP / r["file"]) for r in rows[:30]]).features
    other = np.random.default_rng(0).normal(size=(20, 16)).astype(np.float32)
    add_first_labels(
        bundle,
        np.concatenate([feats, other]),
        [r["label"] for r in rows[:30]] + ["deer", "human"] * 10,
        [r["file"] for r in rows[:30]] + [f"elsewhere/{i}.jpg" for i in range(20)],
    )
    assert load_bundle(bundle).manifest.classifier.train_features is not None  # verified
    r = simulate(labels_csv, CAMTRAP, bundle, every=0, threads=1, limit=40)
    assert r["first_labels_left_out"] == 30 and r["first_labels"] == 20
    kept = simulate(
        labels_csv, CAMTRAP, bundle, every=0, threads=1, limit=40, leave_stream_out=False
    )
    assert kept["first_labels_left_out"] == 0 and kept["first_labels"] == 50


def test_the_command_writes_the_report(learnable: Path, labels_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "sim.json"
    res = CliRunner().invoke(
        app,
        [
            "simulate",
            str(labels_csv),
            "--images-root",
            str(CAMTRAP),
            "--json",
            str(out),
            "--bundle",
            str(learnable),
            "--every",
            "20",
            "--limit",
            "30",
        ],
    )
    assert res.exit_code == 0, res.output
    r = json.loads(out.read_text())
    assert len(r["frames"]) == r["n_frames"] == 30 and "30 frames" in res.output
    assert figures(r["frames"], ["empty"])["reviewed_share"] == r["reviewed_share"]


def test_first_labels_shipped_unlisted_with_sources(
    learnable: Path, labels_csv: Path, tmp_path: Path
) -> None:
    """A training set shipped as the default bundle's exporter writes it (label indices into
    its own class list, each row's source, not named in the manifest) is read, and the
    stream's own source is left out."""
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(learnable, bundle)
    rng = np.random.default_rng(0)
    names = np.array(["human", "deer", "fox", "empty"])  # another order than the bundle's
    np.savez_compressed(
        bundle / "train_features.npz",
        features=rng.normal(size=(50, 16)).astype(np.float16),
        labels=np.arange(50) % 4,
        classes=names,
        sources=np.array(["peru_s90_animl"] * 30 + ["elsewhere"] * 20),
    )
    from edge.learn import first_labels

    first = first_labels(load_bundle(bundle))
    assert first is not None and len(first.y) == 50
    assert [CLASSES[k] for k in first.y[:4]] == ["human", "deer", "fox", "empty"]
    r = simulate(labels_csv, CAMTRAP, bundle, every=0, threads=1, limit=20)
    assert r["first_labels_left_out"] == 30 and r["first_labels"] == 20
