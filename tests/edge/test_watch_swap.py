"""A bundle replaced while the watcher runs (what `edge learn` does) is taken between batches."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

from conftest import CAMTRAP

from edge.bundle import load_bundle, write_manifest
from edge.journal import Journal
from edge.tui import Stats
from edge.watch import WatchOptions, run_forever

CA01 = CAMTRAP / "mlwic_examples" / "CA-01"


def _with_thresholds(src: Path, dest: Path, thresholds: dict[str, float]) -> Path:
    shutil.copytree(src, dest)
    b = load_bundle(dest)
    write_manifest(dest, b.manifest.model_copy(update={"thresholds": thresholds}))
    return dest


def _wait(stats: Stats, n: int) -> None:
    deadline = time.monotonic() + 60
    while sum(stats.decisions.values()) < n and time.monotonic() < deadline:
        time.sleep(0.05)


def test_a_bundle_swapped_in_place_is_taken_and_a_broken_one_is_not(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    inbox, out = tmp_path / "in", tmp_path / "out"
    (inbox / "cam").mkdir(parents=True)
    live = _with_thresholds(tiny_bundle, tmp_path / "bundle", {"tag": 1.0, "empty": 1.0})
    better = _with_thresholds(
        tiny_bundle, tmp_path / "better", {"tag": 0.0, "empty": 0.0, "empty_foreground": 1.0}
    )
    opts = WatchOptions(
        inbox=inbox,
        out=out,
        thresholds={"tag": 1.0, "empty": 1.0},
        threshold_overrides={},
        settle=0.1,
        give_up=2.0,
        batch=2,
        bundle_check=0.2,
    )
    stats = Stats(out=out)
    t = threading.Thread(target=run_forever, args=(load_bundle(live), opts, stats))
    t.start()
    frames = sorted(CA01.iterdir())[:6]
    try:
        for p in frames[:2]:
            shutil.copy(p, inbox / "cam" / p.name)
        _wait(stats, 2)
        # a broken replacement (a model file that fails its checksum) is not taken
        broken = tmp_path / "broken"
        shutil.copytree(live, broken)
        (broken / "classifier.onnx").write_bytes(b"not a model")
        live.rename(tmp_path / "old")
        broken.rename(live)
        time.sleep(0.6)
        shutil.copy(frames[2], inbox / "cam" / frames[2].name)
        _wait(stats, 3)
        # the good one, swapped in the way edge learn installs it
        live.rename(tmp_path / "broken-old")
        better.rename(live)
        time.sleep(0.6)
        for p in frames[3:]:
            shutil.copy(p, inbox / "cam" / p.name)
        _wait(stats, 6)
    finally:
        opts.stop.set()
        t.join(30)
    assert not t.is_alive()
    with Journal.open(out) as j:
        decided = {Path(f.relpath).name: f.decision for f in j.frames()}
    assert [decided[p.name] for p in frames[:3]] == ["review"] * 3
    assert all(decided[p.name] in ("tagged", "empty") for p in frames[3:])
    assert opts.thresholds["tag"] == 0.0
