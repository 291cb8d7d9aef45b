"""Crash safety for real: a driver process killed at random moments and at every step.

After any number of SIGKILLs and restarts every frame dropped into IN must lie in exactly one
place under OUT (by content hash), none left in IN when moving, no temp file anywhere, and the
journal must hold exactly one `done` row per frame that points at its bytes.
SIGKILL stops the process, not the machine: fsync ordering against a power cut is argued in
edge/journal.py and edge/sink.py but not exercised here.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edge.discover import Watcher
from edge.journal import Decision, Journal
from edge.loop import drain
from edge.sink import admit
from edge.stability import StabilityGate

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"

FRAMES = sorted((SHARED / "camtrap/mlwic_examples/CA-01").glob("*.jpg"))
DRIVER = Path(__file__).with_name("crash_driver.py")
CAMERAS = ("cam1", "Cámara 2", "cam 3/sub")


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _driver(inbox: Path, out: Path, *args: str, crash_at: str | None = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "EDGE_CRASH_AT"}
    if crash_at:
        env["EDGE_CRASH_AT"] = crash_at
    return subprocess.Popen(
        [sys.executable, str(DRIVER), str(inbox), str(out), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _run(inbox: Path, out: Path, *args: str, crash_at: str | None = None) -> int:
    p = _driver(inbox, out, *args, crash_at=crash_at)
    log, _ = p.communicate(timeout=120)
    assert p.returncode in (0, 77), log
    return p.returncode


def _drop(inbox: Path, src: Path, rel: str, *, slow: bool) -> None:
    """Drop a frame as a camera or copy tool would: temp file + rename, or slowly in chunks."""
    dst = inbox / rel
    dst.parent.mkdir(parents=True, exist_ok=True)
    data = src.read_bytes()
    if slow:
        with open(dst, "wb") as f:
            for i in range(0, len(data), 8192):
                f.write(data[i : i + 8192])
                f.flush()
                time.sleep(0.01)
    else:
        tmp = dst.with_name(f".{dst.name}.part")
        tmp.write_bytes(data)
        os.rename(tmp, dst)


def _images(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in (".jpg", ".jpeg")]


def _assert_exactly_once(inbox: Path, out: Path, dropped: dict[str, str], *, copy: bool) -> None:
    placed: dict[str, list[Path]] = {}
    for p in _images(out):
        placed.setdefault(_sha(p), []).append(p)
    assert set(placed) == set(dropped), "frames lost or foreign files in OUT"
    dupes = {k: v for k, v in placed.items() if len(v) > 1}
    assert not dupes, f"duplicated: {dupes}"
    left = _images(inbox)
    if copy:
        assert sorted(_sha(p) for p in left) == sorted(dropped)
    else:
        assert left == [], f"left in IN: {left}"
    temps = [
        p for p in [*inbox.rglob("*"), *out.rglob("*")] if p.name.endswith((".edge-tmp", ".part"))
    ]
    assert temps == []
    with Journal.open(out) as j:
        rows = j.frames()
        assert len(rows) == len(dropped)
        assert {r.state for r in rows} == {"done"}
        assert sorted(r.sha256 for r in rows) == sorted(dropped)
        for r in rows:
            assert r.dest and _sha(out / r.dest) == r.sha256
            assert dropped[r.sha256] == r.relpath
            assert (out / (r.dest + ".json")).exists()


def _fill(inbox: Path, n: int, seed: int = 0) -> dict[str, str]:
    rng = random.Random(seed)
    dropped = {}
    for i, src in enumerate(rng.sample(FRAMES, n)):
        rel = f"{CAMERAS[i % 3]}/{src.name}"
        _drop(inbox, src, rel, slow=False)
        dropped[_sha(src)] = rel
    return dropped


STEPS = [
    ("after_seen", ()),
    ("after_decision", ()),
    ("move_before_rename", ()),
    ("after_place", ()),
    ("after_done", ()),
    ("move_before_unlink", ("--cross-fs",)),
    ("copy_before_rename", ("--cross-fs",)),
    ("copy_before_rename", ("--copy",)),
    ("after_place", ("--copy",)),
]


@pytest.mark.parametrize(("step", "args"), STEPS, ids=[f"{s}{''.join(a)}" for s, a in STEPS])
def test_crash_at_each_step_then_resume(tmp_path: Path, step: str, args: tuple[str, ...]) -> None:
    inbox, out = tmp_path / "IN", tmp_path / "OUT"
    dropped = _fill(inbox, 7)
    opts = ("--once", "--batch", "3", *args)
    assert _run(inbox, out, *opts, crash_at=f"{step}:2") == 77
    assert _run(inbox, out, *opts) == 0
    _assert_exactly_once(inbox, out, dropped, copy="--copy" in args)


def test_crash_while_finishing_a_half_done_move(tmp_path: Path) -> None:
    """Crash after the cross-filesystem copy, then again while the restart removes the source."""
    inbox, out = tmp_path / "IN", tmp_path / "OUT"
    dropped = _fill(inbox, 4)
    opts = ("--once", "--cross-fs")
    assert _run(inbox, out, *opts, crash_at="move_before_unlink") == 77
    assert _run(inbox, out, *opts, crash_at="dedupe_before_unlink") == 77
    assert _run(inbox, out, *opts) == 0
    _assert_exactly_once(inbox, out, dropped, copy=False)


def _kill_loop(tmp_path: Path, *, n_frames: int, kills: int, args: tuple[str, ...], seed: int):
    inbox, out = tmp_path / "IN", tmp_path / "OUT"
    inbox.mkdir()
    rng = random.Random(seed)
    sources = rng.sample(FRAMES, n_frames)
    dropped: dict[str, str] = {}

    def writer() -> None:
        wr = random.Random(seed + 1)
        for i, src in enumerate(sources):
            rel = f"{CAMERAS[i % 3]}/{src.name}"
            _drop(inbox, src, rel, slow=wr.random() < 0.3)
            dropped[_sha(src)] = rel
            time.sleep(wr.uniform(0, 0.04))

    t = threading.Thread(target=writer)
    t.start()
    killed = 0
    while killed < kills:
        p = _driver(inbox, out, *args)
        time.sleep(rng.uniform(0.2, 1.2))
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            killed += 1
        p.communicate(timeout=30)
    t.join()
    with Journal.open(out) as j:  # the killed runs did real work, not just start-up
        assert j.counts().get("done", 0) > 0
    (tmp_path / "STOP").touch()
    p = _driver(inbox, out, *args)
    log, _ = p.communicate(timeout=180)
    assert p.returncode == 0, log
    assert len(dropped) == n_frames
    _assert_exactly_once(inbox, out, dropped, copy="--copy" in args)
    return log


def test_random_kills_short(tmp_path: Path) -> None:
    _kill_loop(tmp_path, n_frames=60, kills=8, args=(), seed=1)


@pytest.mark.slow
@pytest.mark.parametrize("args", [(), ("--copy",), ("--cross-fs",)], ids=["move", "copy", "xfs"])
def test_random_kills_long(tmp_path: Path, args: tuple[str, ...]) -> None:
    _kill_loop(tmp_path, n_frames=250, kills=25, args=args, seed=7)


def test_burst_of_5000_small_frames(tmp_path: Path) -> None:
    """All at once into a bounded queue: every frame handled, the queue never over its bound."""
    import cv2
    import numpy as np

    inbox, out = tmp_path / "IN", tmp_path / "OUT"
    inbox.mkdir()
    ok, buf = cv2.imencode(".jpg", np.full((8, 8, 3), 128, np.uint8))
    assert ok
    data = buf.tobytes()
    n, maxsize = 5000, 128

    def decide(paths: list[Path]) -> list[Decision]:
        return [Decision("empty") for _ in paths]

    with (
        Journal.open(out) as j,
        Watcher(
            inbox, exclude=[out], maxsize=maxsize, check_interval=0.1, rescan_interval=2.0
        ) as w,
    ):
        for i in range(n):
            d = inbox / f"cam{i % 5}"
            d.mkdir(exist_ok=True)
            (d / f"f{i:05d}.jpg").write_bytes(data)
        gate = StabilityGate(settle=0.05, give_up=30)
        end = time.monotonic() + 120
        while time.monotonic() < end:
            for p in w.get_batch(256, timeout=0.05):
                gate.add(p)
            with j.transaction():
                for v in gate.poll():
                    if v.status == "whole":
                        admit(j, inbox, out, v.path)
            drain(j, inbox, out, decide, batch=256, sidecars=False)
            if j.counts().get("done", 0) == n:
                break
        assert j.counts() == {"done": n}
        assert w.queue.high_water <= maxsize
    assert _images(inbox) == []
    assert len(_images(out)) == n
