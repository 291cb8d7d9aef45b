"""What a new user of `edge watch` trips over: stopping, frame order, sizes, messages, logs, the
dashboard. Real frames, a real bundle, real folders and journals, the real command."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time
from pathlib import Path

import piexif
import pytest
from conftest import spawn_watcher
from PIL import Image
from typer.testing import CliRunner

from edge.bundle import load_bundle
from edge.cli import app
from edge.journal import Journal
from edge.tui import Stats
from edge.watch import WatchOptions, run_once

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
CA01 = DATA / "camtrap" / "mlwic_examples" / "CA-01"
PERU = DATA / "camtrap" / "peru_s90_animl" / "S90_SDZG1"
RESULTS = Path("results") / "megadetector.json"
runner = CliRunner()


def options(inbox: Path, out: Path, **kw) -> WatchOptions:
    base = dict(
        inbox=inbox,
        out=out,
        thresholds={"tag": 0.6, "empty": 0.8, "empty_foreground": 0.02},
        settle=0.1,
        give_up=2.0,
        batch=4,
    )
    return WatchOptions(**{**base, **kw})


def results(out: Path) -> dict[str, dict]:
    return {im["file"]: im for im in json.loads((out / RESULTS).read_text())["images"]}


def test_the_results_give_the_original_frame_size_not_the_reduced_decode(
    tiny_bundle: Path, tmp_path: Path
):
    """A small model's frames are decoded at 1/4 scale; the results say how big the frame is,
    turned as the camera's EXIF orientation says."""
    inbox, out = tmp_path / "in", tmp_path / "out"
    (inbox / "S90").mkdir(parents=True)
    src = sorted(PERU.glob("*.JPG"))[0]
    shutil.copy(src, inbox / "S90" / "level.jpg")
    turned = shutil.copy(src, inbox / "S90" / "turned.jpg")
    piexif.insert(piexif.dump({"0th": {piexif.ImageIFD.Orientation: 6}}), str(turned))
    with Image.open(src) as im:
        width, height = im.size
    run_once(load_bundle(tiny_bundle), options(inbox, out), Stats(out=out))
    with Journal.open(out) as j:
        rows = {f.relpath: f for f in j.frames()}
    got = {Path(f).name: (im["width"], im["height"]) for f, im in results(out).items()}
    assert got == {"level.jpg": (width, height), "turned.jpg": (height, width)}
    assert {(f.width, f.height) for f in rows.values()} == {(width, height), (height, width)}
    from megadetector.postprocessing import validate_batch_results as vbr

    checked = vbr.validate_batch_results(str(out / RESULTS))["validation_results"]
    assert checked["errors"] == [] and checked["warnings"] == []  # the watcher's own file


def test_once_takes_each_cameras_frames_in_the_order_they_were_taken(
    tiny_bundle: Path, tmp_path: Path
):
    """Names and directory order say nothing: one camera's frames carry EXIF times in a
    shuffled order, another's have no EXIF and only their files' times; each camera's frames
    are journaled (and so decided, bursts and background models fed) in capture order."""
    import random
    from datetime import datetime, timedelta

    import cv2

    inbox, out = tmp_path / "in", tmp_path / "out"
    (inbox / "exif").mkdir(parents=True)
    (inbox / "plain").mkdir()
    rng = random.Random(7)
    start = datetime(2024, 3, 1, 6, 0, 0)
    minutes = rng.sample(range(1, 500), 10)
    for i, (src, m) in enumerate(zip(sorted(CA01.iterdir())[:10], minutes, strict=True)):
        dst = shutil.copy(src, inbox / "exif" / f"IMG_{i:04d}.JPG")
        stamp = (start + timedelta(minutes=m)).strftime("%Y:%m:%d %H:%M:%S").encode()
        piexif.insert(piexif.dump({"Exif": {piexif.ExifIFD.DateTimeOriginal: stamp}}), str(dst))
    seconds = rng.sample(range(1, 5000), 6)
    for i, (src, s) in enumerate(zip(sorted(PERU.glob("*.JPG"))[:6], seconds, strict=True)):
        ok, data = cv2.imencode(".jpg", cv2.imread(str(src)))  # re-encoded: no EXIF block
        dst = inbox / "plain" / f"frame{i}.jpg"
        dst.write_bytes(data.tobytes())
        os.utime(dst, (1_700_000_000 + s, 1_700_000_000 + s))
    run_once(load_bundle(tiny_bundle), options(inbox, out, copy=True), Stats(out=out))
    with Journal.open(out) as j:
        rows = j.frames()  # in journal order: the order they were admitted and decided
    assert len(rows) == 16
    for camera, source in (("exif", "exif"), ("plain", "file")):
        mine = [f for f in rows if f.camera == camera]
        times = [f.captured_at for f in mine]
        assert {f.time_source for f in mine} == {source}
        assert times == sorted(times) and len(set(times)) == len(times)
    # and not by chance: the names' order is another order
    names = [f.relpath for f in rows if f.camera == "exif"]
    assert names != sorted(names)


def _done(out: Path) -> list:
    if not (out / "journal.sqlite").exists():
        return []
    with Journal.open(out) as j:
        return [f for f in j.frames() if f.state == "done"]


def _wait(cond, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.05)


def _named_paths_exist(text: str, out: Path) -> None:
    """Every path under OUT that the stop message names is there."""
    named = re.findall(re.escape(str(out)) + r"\S*", text)
    assert named, text
    assert all(Path(p.rstrip(".,;)")).exists() for p in named), text


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_by_signal_writes_the_results_file_with_every_frame_handled(
    tiny_bundle: Path, tmp_path: Path, sig: signal.Signals
):
    """The live watcher, stopped well within the minute between its rewrites of the results
    file: the file is written on the way out, with every frame of the journal."""
    inbox, out = tmp_path / "in", tmp_path / "out"
    (inbox / "cam").mkdir(parents=True)
    proc = spawn_watcher(tiny_bundle, inbox, out, capture=True)
    try:
        frames = sorted(CA01.iterdir())[:6]
        for p in frames:
            shutil.copy(p, inbox / "cam")
        _wait(lambda: len(_done(out)) == len(frames))
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    done = _done(out)
    assert len(done) == len(frames)
    assert sorted(results(out)) == sorted(f.dest for f in done)
    assert f"stopped ({sig.name})" in stdout and "Traceback" not in stdout + stderr
    _named_paths_exist(stdout, out)
    _frame_lines(stderr, done)  # the live watcher logs each frame as it goes


def test_ctrl_c_in_a_batch_run_stops_after_the_batch_and_the_results_hold_what_was_done(
    tiny_bundle: Path, tmp_path: Path
):
    inbox, out = tmp_path / "in", tmp_path / "out"
    (inbox / "cam").mkdir(parents=True)
    frames = sorted(CA01.iterdir())[:120]
    for p in frames:
        shutil.copy(p, inbox / "cam")
    proc = spawn_watcher(tiny_bundle, inbox, out, "--once", "--batch", "1", capture=True)
    try:
        _wait(lambda: len(_done(out)) >= 3)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    done = _done(out)
    assert 3 <= len(done) < len(frames)  # stopped, not run to the end
    assert sorted(results(out)) == sorted(f.dest for f in done)
    left = list((inbox / "cam").iterdir())
    assert len(left) + len(done) == len(frames)  # the rest wait in the inbox, none lost
    assert "stopped (SIGINT)" in stdout and "could not be read" not in stdout
    assert "Traceback" not in stdout + stderr
    _named_paths_exist(stdout, out)


def flat(text: str) -> str:
    """Rich wraps to the terminal's width; compare words, not line breaks."""
    return " ".join(text.split())


def test_watch_on_a_file_says_it_is_a_file_and_a_folder_is_needed(
    tiny_bundle: Path, tmp_path: Path
):
    frame = Path(shutil.copy(sorted(CA01.iterdir())[0], tmp_path / "IMG_0001.JPG"))
    r = runner.invoke(app, ["watch", str(frame), "--bundle", str(tiny_bundle), "--once"])
    assert r.exit_code == 2
    text = flat(r.output)
    assert "is a file, not a folder" in text and "no such folder" not in text
    assert str(tmp_path) in text  # the folder it is in, which is what was meant
    assert frame.exists() and not (tmp_path / "sorted").exists()


def test_once_on_an_empty_folder_says_no_frames_were_found_and_is_done_not_watching(
    tiny_bundle: Path, tmp_path: Path
):
    inbox, out = tmp_path / "empty card", tmp_path / "out"
    inbox.mkdir()
    (inbox / "notes.txt").write_text("not a frame\n")
    args = [
        "watch",
        str(inbox),
        "--out",
        str(out),
        "--bundle",
        str(tiny_bundle),
        "--once",
        "--no-tui",
    ]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    text = flat(r.output)
    assert f"no frames found in {inbox}" in text
    assert "watching" not in text and "status done" in text
    # frames there, all sorted by an earlier run: that is said instead
    (inbox / "cam").mkdir()
    shutil.copy(sorted(CA01.iterdir())[0], inbox / "cam")
    r = runner.invoke(app, [*args, "--copy", "--settle", "0.1"])
    assert r.exit_code == 0 and "no frames found" not in flat(r.output)
    assert "watching" not in flat(r.output) and "status done" in flat(r.output)
    r = runner.invoke(app, [*args, "--copy"])
    assert r.exit_code == 0 and "already in the journal" in flat(r.output)


def _frame_lines(stderr: str, rows: list) -> dict[str, str]:
    """The log line of each journaled frame (exactly one each)."""
    lines = stderr.splitlines()
    found = {}
    for f in rows:
        mine = [line for line in lines if f"{f.relpath}: {f.decision}" in line]
        assert len(mine) == 1, (f.relpath, mine)
        found[f.relpath] = mine[0]
    return found


def test_no_tui_logs_a_start_line_one_line_per_frame_and_a_stop_line(
    tiny_bundle: Path, tmp_path: Path
):
    """What journald gets from the service (`--no-tui`): stderr, one concise line a frame."""
    inbox, out = tmp_path / "in", tmp_path / "out"
    (inbox / "cam").mkdir(parents=True)
    for p in sorted(CA01.iterdir())[:5]:
        shutil.copy(p, inbox / "cam")
    (inbox / "cam" / "broken.jpg").write_bytes(b"not a picture")
    proc = spawn_watcher(tiny_bundle, inbox, out, "--once", capture=True)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    with Journal.open(out) as j:
        rows = j.frames()
    assert len(rows) == 6
    lines = _frame_lines(stderr, rows)
    for f in rows:
        if f.decision == "quarantine":
            assert "quarantine" in lines[f.relpath]
        else:
            assert f.label in lines[f.relpath]
            assert f"confidence {f.confidence:.2f}" in lines[f.relpath]
    start = [line for line in stderr.splitlines() if "start:" in line]
    assert len(start) == 1
    assert all(
        s in start[0] for s in (str(tiny_bundle), str(inbox), str(out), "CPUExecutionProvider")
    )
    stop = [line for line in stderr.splitlines() if "stop:" in line]
    counts = {d: sum(f.decision == d for f in rows) for d in ("tagged", "review", "empty")}
    assert len(stop) == 1 and "6 frame(s) handled" in stop[0]
    assert all(f"{d} {n}" in stop[0] for d, n in counts.items())
    assert "quarantine 1" in stop[0] and str(out / RESULTS) in stop[0]
    # the dashboard at the end goes to stdout, the log lines do not
    assert "start:" not in stdout and "confidence" not in stdout


def _dashboard(stats: Stats) -> list[str]:
    import io

    from rich.console import Console

    from edge.tui import render

    console = Console(width=80, height=24, record=True, file=io.StringIO())
    console.print(render(stats))
    return console.export_text().splitlines()


def test_the_dashboard_fits_80x24_with_cameras_pending_last_frame_uptime_and_review_folder(
    tiny_bundle: Path, tmp_path: Path
):
    inbox, out = tmp_path / "in", tmp_path / "out"
    (inbox / "CA 01 ünï").mkdir(parents=True)
    (inbox / "S90").mkdir()
    for p in sorted(CA01.iterdir())[:4]:
        shutil.copy(p, inbox / "CA 01 ünï")
    for p in sorted(PERU.glob("*.JPG"))[:3]:
        shutil.copy(p, inbox / "S90")
    stats = run_once(load_bundle(tiny_bundle), options(inbox, out), Stats(out=out))
    lines = _dashboard(stats)
    assert len(lines) <= 24 and max(map(len, lines)) <= 80
    end = next(i for i, line in enumerate(lines) if line.startswith("╰"))
    header = lines[: end + 1]
    assert len(header) == 2 + 4, "\n".join(header)  # 3 rows and the status: none wrapped
    text = "\n".join(header)
    for item in (
        "seen 7 this run",
        "pending 0",
        "frames/s",
        f"review queue {stats.review_queue}",
        "latency p50",
        "provider CPU",
        "disk free",
        "status done",
    ):
        assert item in text, item
    assert re.search(r"last frame \d\d:\d\d:\d\d", text) and re.search(r"up \d+:\d\d:\d\d", text)
    with Journal.open(out) as j:
        review = {
            c: sum(f.camera == c and f.decision == "review" for f in j.frames())
            for c in ("CA 01 ünï", "S90")
        }
    body = "\n".join(lines[end + 1 :])
    for camera, n in (("CA 01 ünï", 4), ("S90", 3)):  # frames, of which review, per camera
        assert re.search(rf"{camera}\s*│\s*{n}\s*│\s*{review[camera]}\s", body), body
    assert str(out / "review") in "".join(line.rstrip() for line in lines)
    # a long status (a paused watcher's reason) is cut, never wrapped
    stats.status = "paused: no space left writing " + "/very/long/path" * 10
    header = _dashboard(stats)
    assert len(header[: next(i for i, x in enumerate(header) if x.startswith("╰")) + 1]) == 6


def test_frames_per_second_is_the_recent_rate_not_a_long_average(tmp_path: Path):
    stats = Stats(out=tmp_path)
    now = time.monotonic()
    stats.started = now - 600  # the watcher has run for ten minutes
    stats.done_times.extend(now - 6 + 6 * i / 89 for i in range(90))  # a burst: 90 in 6 s
    assert 13 < stats.throughput() < 16
    stats.done_times.clear()
    stats.done_times.extend(now - 60 + 6 * i / 89 for i in range(90))  # a minute ago
    assert stats.throughput() == 0


def test_the_dashboard_counts_the_frames_pending(tiny_bundle: Path, tmp_path: Path):
    """Frames found and not decided yet: here waiting the settle time out in the gate."""
    import threading

    from edge.watch import run_forever

    inbox, out = tmp_path / "in", tmp_path / "out"
    (inbox / "cam").mkdir(parents=True)
    frames = sorted(CA01.iterdir())[:4]
    for p in frames:
        shutil.copy(p, inbox / "cam")
    opts = options(inbox, out, settle=1.5)
    stats = Stats(out=out)
    seen: list[int] = []
    t = threading.Thread(
        target=run_forever,
        args=(load_bundle(tiny_bundle), opts, stats),
        kwargs={"on_tick": lambda: seen.append(stats.pending)},
    )
    t.start()
    try:
        _wait(lambda: sum(stats.decisions.values()) == len(frames))
        _wait(lambda: seen and seen[-1] == 0, timeout=5)
    finally:
        opts.stop.set()
        t.join(30)
    assert max(seen) == len(frames) and seen[-1] == 0
