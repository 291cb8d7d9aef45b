"""`edge learn`: a head learned from a person's answers, installed only when it does better.

Real ONNX sessions (the tiny learnable bundle), real SQLite journals answered through the
review page's own code, real camera-trap frames. The task is one the tiny random backbone can
learn: day frames are labelled "deer", night (infrared) frames "human".
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import CAMTRAP, CLASSES

from edge.bundle import file_entry, load_bundle, read_manifest, write_manifest
from edge.decode import load_image
from edge.journal import Decision, Journal
from edge.learn import (
    LEARN_DIR,
    LOG_FILE,
    answered,
    class_index,
    run_learn,
    tag_threshold,
)
from edge.linear_head import HEAD_FILE, fit_head, load_head, save_head
from edge.review.answers import answer_frames
from edge.runtime import Runtime
from edge.sink import file_sha256

N_FRAMES = 60


@pytest.fixture(scope="module")
def learnable(bundle_factory: Callable[..., Path]) -> Path:
    return bundle_factory(learnable=True)


@pytest.fixture(scope="module")
def stream() -> list[tuple[Path, str]]:
    """60 real frames, day and night taking turns, labelled deer (day) and human (night)."""
    labels = CAMTRAP / "labels.csv"
    if not labels.is_file():
        pytest.skip(f"reference data missing: {labels}")
    with labels.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["source"] == "peru_s90_animl"]
    day = [CAMTRAP / r["file"] for r in rows if r["day_or_night"] == "day"]
    night = [CAMTRAP / r["file"] for r in rows if r["day_or_night"] == "night"]
    pairs = [p for d, n in zip(day, night, strict=False) for p in ((d, "deer"), (n, "human"))]
    return pairs[:N_FRAMES]


@pytest.fixture(scope="module")
def features(learnable: Path, stream: list[tuple[Path, str]]) -> np.ndarray:
    rt = Runtime.from_bundle(load_bundle(learnable), threads=1, features=True)
    out = rt.run([load_image(p) for p, _ in stream])
    assert out.features is not None
    return out.features


def with_head(
    src: Path,
    dest: Path,
    weight: np.ndarray,
    bias: np.ndarray,
    thresholds: dict[str, float] | None = None,
) -> Path:
    shutil.copytree(src, dest)
    save_head(dest / HEAD_FILE, weight, bias)
    m = read_manifest(dest)
    c = m.classifier.model_copy(update={"head": file_entry(dest, HEAD_FILE)})
    write_manifest(
        dest, m.model_copy(update={"classifier": c, "thresholds": thresholds or m.thresholds})
    )
    return dest


def answered_out(
    out: Path, stream: list[tuple[Path, str]], labels: list[str] | None = None
) -> Path:
    """OUT as the watcher leaves it (every frame kept for review) after a person answered each
    frame on the review page, in stream order, with its label (or `labels`)."""
    labels = labels or [lab for _, lab in stream]
    (out / "review").mkdir(parents=True)
    with Journal.open(out) as j:
        ids = []
        for k, (path, _) in enumerate(stream):
            name = f"{k:03d}_{path.name}"
            shutil.copy(path, out / "review" / name)
            st = (out / "review" / name).stat()
            fid = j.record_seen(
                f"cam/{name}", st.st_size, st.st_mtime, file_sha256(out / "review" / name)
            )
            j.record_decision(fid, Decision("review", label="fox", softmax=0.4), f"review/{name}")
            j.mark_done(fid, f"review/{name}")
            ids.append(fid)
        for fid, lab in zip(ids, labels, strict=True):
            answer_frames(j, out, [fid], "label", who="ranger", label=lab)
    return out


def log_of(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / LEARN_DIR / LOG_FILE).read_text().splitlines()]


def test_answered_reads_the_review_pages_answers(
    tmp_path: Path, stream: list[tuple[Path, str]]
) -> None:
    out = answered_out(tmp_path / "out", stream[:4])
    got = answered(Journal.open(out))
    assert [a.label for a in got] == ["deer", "human", "deer", "human"]
    assert all((out / a.path).is_file() and a.path.startswith("tagged/") for a in got)
    assert [a.frame_id for a in got] == sorted(a.frame_id for a in got)


def test_labels_map_to_the_bundles_classes() -> None:
    cats = ["animal", "empty", "person", "vehicle"]
    assert [class_index(x, cats) for x in ("red fox", "human", None, "car", "unknown")] == [
        0,
        2,
        1,
        3,
        None,
    ]
    assert class_index("Deer", CLASSES, ["empty"]) == 1
    assert class_index(None, CLASSES, ["empty"]) == 0
    assert class_index("elk", CLASSES, ["empty"]) is None


def test_a_better_head_is_installed_atomically_old_kept(
    tmp_path: Path, learnable: Path, stream: list[tuple[Path, str]]
) -> None:
    # the current bundle calls everything "fox", sure of itself: wrong on every frame
    bias = np.array([0, 0, 8, 0], np.float32)
    target = with_head(learnable, tmp_path / "bundle", np.zeros((4, 16), np.float32), bias)
    old_manifest = (target / "manifest.json").read_text()
    out = answered_out(tmp_path / "out", stream)
    entry = run_learn(out, target, threads=1)
    assert entry["install"] is True, entry["reason"]
    assert entry["candidate"]["cost"] < entry["current"]["cost"]
    assert entry["current"]["wrong_auto"] == entry["held_back"]  # all "fox"
    # the new bundle is in place and verified; the old one kept beside it, unchanged
    prev = tmp_path / "bundle.prev"
    assert (prev / "manifest.json").read_text() == old_manifest
    new = load_bundle(target)
    assert new.manifest.classifier.head is not None
    assert new.manifest.thresholds["tag"] == entry["calibration"]["tag"]
    assert new.manifest.validation["learned"]["answers"] == N_FRAMES
    assert (target / "classifier.onnx").stat().st_ino == (prev / "classifier.onnx").stat().st_ino
    assert not list(tmp_path.glob("bundle.new-*"))
    # and it follows what the person said: day frames are deer, night frames human
    rt = Runtime.from_bundle(new, threads=1)
    pred = rt.run([load_image(p) for p, _ in stream]).top
    truth = np.array([CLASSES.index(lab) for _, lab in stream])
    assert (pred == truth).mean() > 0.9
    assert log_of(out)[-1]["installed"] == str(target)
    # features were cached: a second step reads them, finds its own bundle as good, keeps it
    assert (out / LEARN_DIR / "features.npz").is_file()
    again = run_learn(out, target, threads=1)
    assert again["install"] is False
    assert load_head(target / HEAD_FILE)[0].tolist() == load_head(new.head_path)[0].tolist()


def test_a_worse_head_is_never_installed(
    tmp_path: Path, learnable: Path, stream: list[tuple[Path, str]], features: np.ndarray
) -> None:
    # the current bundle knows the task; the early answers were given carelessly (swapped)
    truth = np.array([CLASSES.index(lab) for _, lab in stream])
    head = fit_head(features, truth, n_classes=4, C=10.0)
    w, b = head["weight"] * 5, head["bias"] * 5  # confident
    assert ((features @ w.T + b).argmax(1) == truth).all()
    target = with_head(learnable, tmp_path / "bundle", w, b, {"tag": 0.6, "empty": 0.8})
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    swap = {"deer": "human", "human": "deer"}
    labels = [swap[lab] if k < 45 else lab for k, (_, lab) in enumerate(stream)]
    out = answered_out(tmp_path / "out", stream, labels)
    entry = run_learn(out, target, threads=1)
    assert entry["install"] is False
    assert entry["candidate"]["cost"] > entry["current"]["cost"]
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert not (tmp_path / "bundle.prev").exists()
    assert log_of(out)[-1]["install"] is False


def test_every_waits_for_enough_new_answers(
    tmp_path: Path, learnable: Path, stream: list[tuple[Path, str]]
) -> None:
    target = with_head(
        learnable,
        tmp_path / "bundle",
        np.zeros((4, 16), np.float32),
        np.array([0, 0, 8, 0], np.float32),
    )
    out = answered_out(tmp_path / "out", stream[:30])
    first = run_learn(out, target, threads=1, every=20)
    assert not first.get("skipped")
    second = run_learn(out, target, threads=1, every=20)
    assert second["skipped"] and "fewer than 20 new answers" in second["reason"]
    assert len(log_of(out)) == 1  # a step skipped decides nothing and is not logged


def test_tag_threshold_meets_the_target_on_held_out_frames() -> None:
    rng = np.random.default_rng(1)
    n = 40_000
    conf = rng.uniform(0.3, 1.0, n)
    correct = rng.uniform(size=n) < conf  # calibrated: right with probability conf
    fit, held = slice(0, n // 2), slice(n // 2, n)
    t = tag_threshold(conf[fit], correct[fit], target_error=0.02)
    tagged = conf[held] >= t
    assert tagged.sum() > 500
    assert 1 - correct[held][tagged].mean() <= 0.025
    # and it is the lowest such threshold: a bit lower lets more than the target through
    lower = conf[held] >= t - 0.03
    assert 1 - correct[held][lower].mean() > 0.02


def test_tag_threshold_edges() -> None:
    assert tag_threshold([0.9] * 5, [True] * 5, min_count=20) == 1.0  # too few to say
    # ties go together: at 0.8, 2 wrong among all 50 (4 %): no good for 2 %, fine for 5 %
    conf = [0.95] * 30 + [0.8] * 20
    ok = [True] * 30 + [True] * 18 + [False] * 2
    assert tag_threshold(conf, ok, target_error=0.02, min_count=20) == 0.95
    assert tag_threshold(conf, ok, target_error=0.05, min_count=20) == 0.8
    with pytest.raises(ValueError, match="correctness"):
        tag_threshold([0.5, 0.6], [True])


def test_learning_needs_no_torch() -> None:
    """The device learns: fitting a head imports neither torch nor the workstation's side."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np, edge.learn, edge.simulate;"
        "from edge.linear_head import fit_head;"
        "fit_head(np.random.default_rng(0).normal(size=(40, 8)), np.arange(40) % 2);"
        "sys.exit('torch' in sys.modules or 'export' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


def test_the_command_learns_and_says_what_it_did(
    tmp_path: Path, learnable: Path, stream: list[tuple[Path, str]]
) -> None:
    from typer.testing import CliRunner

    from edge.cli import app

    target = with_head(
        learnable,
        tmp_path / "bundle",
        np.zeros((4, 16), np.float32),
        np.array([0, 0, 8, 0], np.float32),
    )
    out = answered_out(tmp_path / "out", stream)
    res = CliRunner().invoke(app, ["learn", str(out), "--bundle", str(target)])
    assert res.exit_code == 0, res.output
    assert "installed" in res.output and (tmp_path / "bundle.prev").is_dir()
    res = CliRunner().invoke(app, ["learn", str(tmp_path / "nowhere")])
    assert res.exit_code == 2 and "no journal.sqlite" in res.output


def test_the_packaged_bundle_is_never_written(
    tmp_path: Path, learnable: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import edge
    from edge.learn import learn_paths

    monkeypatch.delenv("OVERMAP_BUNDLE", raising=False)
    out = tmp_path / "out"
    source, target = learn_paths(out, None)
    assert source.is_relative_to(Path(edge.__file__).parent) and target == out / "bundle"
    shutil.copytree(learnable, out / "bundle")  # once learned, OUT/bundle is the one
    assert learn_paths(out, None) == (out / "bundle", out / "bundle")
    assert learn_paths(out, learnable) == (learnable, learnable)


def test_a_learned_bundle_carries_the_first_labels_named(tmp_path: Path, learnable: Path) -> None:
    from edge.learn import Policy, write_learned_bundle

    src = tmp_path / "src"
    shutil.copytree(learnable, src)
    np.savez(
        src / "train_features.npz",
        features=np.zeros((4, 16), np.float16),
        labels=np.array([0, 1, 2, 3]),
    )  # shipped, not named in the manifest
    policy = Policy(np.ones((4, 16), np.float32), np.zeros(4, np.float32), None, {"tag": 0.9})
    dest = write_learned_bundle(load_bundle(src), tmp_path / "new", policy, {"answers": 0})
    b = load_bundle(dest)  # verifies every named file's sha256
    assert b.manifest.classifier.train_features is not None
    assert b.manifest.classifier.head is not None and b.manifest.thresholds == {"tag": 0.9}
    assert (dest / "train_features.npz").stat().st_ino == (src / "train_features.npz").stat().st_ino


def test_a_live_watcher_learns_every_n_answers_and_takes_the_better_bundle(
    tmp_path: Path, learnable: Path, stream: list[tuple[Path, str]]
) -> None:
    """`edge watch --learn-every N`: the step runs beside the watcher, installs the camera's
    bundle at OUT/bundle, and the watcher decides the next frames with it."""
    import threading
    import time

    from edge.tui import Stats
    from edge.watch import WatchOptions, run_forever

    out = answered_out(tmp_path / "out", stream)
    bias = np.array([0, 0, 8, 0], np.float32)  # the bundle in use calls everything "fox"
    live = with_head(learnable, out / "bundle", np.zeros((4, 16), np.float32), bias)
    inbox = tmp_path / "in"
    (inbox / "cam").mkdir(parents=True)
    opts = WatchOptions(
        inbox=inbox,
        out=out,
        thresholds=dict(load_bundle(live).manifest.thresholds),
        settle=0.1,
        give_up=2.0,
        batch=2,
        bundle_check=0.2,
        follow=live,
        learn_every=10,
    )
    stats = Stats(out=out)
    t = threading.Thread(target=run_forever, args=(load_bundle(live), opts, stats))
    t.start()
    try:
        deadline = time.monotonic() + 120
        while not (out / "bundle.prev").is_dir() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert (out / "bundle.prev").is_dir(), "no bundle was learned and installed"
        learned = load_bundle(live).manifest
        while opts.thresholds != learned.thresholds and time.monotonic() < deadline:
            time.sleep(0.2)
        assert opts.thresholds == learned.thresholds  # the watcher took it
        for k, (path, _) in enumerate(stream[:4]):
            shutil.copy(path, inbox / "cam" / f"new{k}_{path.name}")
        while sum(stats.decisions.values()) < 4 and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        opts.stop.set()
        t.join(60)
    assert not t.is_alive()
    with Journal.open(out) as j:
        new = {Path(f.relpath).name: f.label for f in j.frames() if "new" in f.relpath}
    assert [new[f"new{k}_{p.name}"] for k, (p, _) in enumerate(stream[:4])] == [
        lab for _, lab in stream[:4]
    ]  # the person's labels, no longer "fox"
    assert log_of(out)[-1]["install"] is True
