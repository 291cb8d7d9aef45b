"""The bundle that ships in the package: verified, it knows empty, person and vehicle, and the
quick start sorts the sample card with it, with no torch, without setting an animal aside."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge.bundle import default_bundle, load_bundle
from edge.categories import CATEGORIES, md_category
from edge.reports import MD_RESULTS

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples" / "camtrap"
LABELS = ROOT.parent / "shared" / "data" / "camtrap" / "labels.csv"


def test_the_shipped_bundle_verifies_and_knows_the_four_categories() -> None:
    b = load_bundle(default_bundle())
    c = b.manifest.classifier
    assert c.classes == list(CATEGORIES)
    assert c.empty_classes == ["empty"] and c.human_classes == ["person"]
    assert len(c.guess_classes) == 398  # ImageNet's animals, shown as a species guess
    assert c.input.resize != "center_crop"  # the whole frame is seen
    loso = b.manifest.validation["camtrap_loso"]
    assert b.manifest.thresholds["empty"] == loso["t_empty"]
    # the empty threshold was chosen so that no held-out source lost 1 % of its animals
    assert all(r["non_empty_lost_share"] < 0.01 for r in loso["per_source"].values())


def _sample_labels() -> dict[str, str]:
    """The sample frames' categories, from the reference data they were copied from."""
    if not LABELS.is_file():
        pytest.skip("../shared/data is not beside the checkout")
    with LABELS.open(newline="") as f:
        rows = {
            Path(r["file"]).name: r
            for r in csv.DictReader(f)
            if r["source"] == "peru_s90_animl" and "S90_SDZG1" in r["file"]
        }
    return {p.name: md_category(rows[p.name]["label"]) for p in SAMPLES.rglob("*.JPG")}


def test_the_quick_start_sorts_the_samples_without_torch_and_loses_no_animal(tmp_path) -> None:
    truth = _sample_labels()
    out = tmp_path / "sorted"
    # the device side with torch made unimportable: the quick start installs no torch
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['torchvision'] = None; "
        "from edge.cli import app; sys.argv = ['edge'] + sys.argv[1:]; app()"
    )
    env = {k: v for k, v in os.environ.items() if k != "OVERMAP_BUNDLE"}
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "watch",
            str(SAMPLES),
            "--out",
            str(out),
            "--copy",
            "--once",
            "--no-tui",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    folder = {
        p.name: p.relative_to(out).parts[0]
        for p in out.rglob("*.JPG")
        if p.relative_to(out).parts[0] in ("empty", "tagged", "review")
    }
    assert set(folder) == set(truth), r.stderr[-2000:]
    lost = [n for n, where in folder.items() if where == "empty" and truth[n] != "empty"]
    assert lost == []
    assert sorted(p.name for p in SAMPLES.rglob("*.JPG")) == sorted(truth)  # --copy: untouched
    results = json.loads((out / MD_RESULTS).read_text())
    assert len(results["images"]) == len(truth)


def test_the_watcher_takes_the_cameras_learned_bundle_in_out_over_the_default(tmp_path) -> None:
    """`edge learn` installs the camera's own bundle as OUT/bundle; the next `edge watch` of
    that OUT uses it without being told, and a bundle given on the command line still wins."""
    import shutil

    out = tmp_path / "sorted"
    shutil.copytree(default_bundle(), out / "bundle")
    inbox = tmp_path / "card" / "S90"
    inbox.mkdir(parents=True)
    shutil.copy(next(SAMPLES.rglob("*.JPG")), inbox)

    def start_line(*extra: str) -> str:
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "edge.cli",
                "watch",
                str(inbox.parent),
                "--out",
                str(out),
                "--copy",
                "--once",
                "--no-tui",
                *extra,
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0, r.stderr[-2000:]
        return next(line for line in r.stderr.splitlines() if "start: bundle" in line)

    assert f"bundle {out / 'bundle'}," in start_line()
    assert f"bundle {default_bundle()}," in start_line("--bundle", str(default_bundle()))
