"""`edge watch` end to end: a real bundle, real frames, real folders, a real journal."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
from conftest import spawn_watcher
from rich.console import Console
from typer.testing import CliRunner

from edge.bundle import load_bundle
from edge.cli import app
from edge.journal import Journal
from edge.reports import summary as summary_text
from edge.reports import write_results
from edge.tui import Stats
from edge.tui import render as render_dashboard
from edge.watch import WatchOptions, run_forever, run_once

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
CA01 = DATA / "camtrap" / "mlwic_examples" / "CA-01"
PERU = DATA / "camtrap" / "peru_s90_animl" / "S90_SDZG1"
IMAGE_EXTS = {".jpg", ".jpeg", ".png"}
runner = CliRunner()


def flat(text: str) -> str:
    """Rich wraps to the terminal's width; compare words, not line breaks."""
    return " ".join(text.split())


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fill_inbox(inbox: Path, n_ca: int = 6, n_peru: int = 3) -> dict[str, str]:
    """Real frames from two cameras plus three bad files; returns sha -> kind."""
    (inbox / "CA 01 ünï").mkdir(parents=True)
    (inbox / "S90").mkdir()
    kinds = {}
    for p in sorted(CA01.iterdir())[:n_ca]:
        shutil.copy(p, inbox / "CA 01 ünï" / p.name)
        kinds[sha(p)] = "good"
    for p in sorted(PERU.iterdir())[:n_peru]:
        shutil.copy(p, inbox / "S90" / p.name)
        kinds[sha(p)] = "good"
    bad = {
        "text.jpg": b"this is not a picture\n",
        "zero.jpg": b"",
        "cut.jpg": (PERU / "EK000001.JPG").read_bytes()[:5000],
    }
    for name, data in bad.items():
        (inbox / "S90" / name).write_bytes(data)
        kinds[hashlib.sha256(data).hexdigest()] = "bad"
    return kinds


def sorted_frames(out: Path) -> list[Path]:
    return [
        p
        for p in out.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_EXTS
        and p.relative_to(out).parts[0] in ("empty", "tagged", "review", "quarantine")
    ]


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


def test_once_sorts_every_frame_into_exactly_one_place(tiny_bundle: Path, tmp_path: Path):
    inbox, out = tmp_path / "in", tmp_path / "out"
    kinds = fill_inbox(inbox)
    stats = run_once(load_bundle(tiny_bundle), options(inbox, out), Stats(out=out))

    placed = sorted_frames(out)
    by_sha = {sha(p): p for p in placed}
    assert len(placed) == len(kinds) == len(by_sha)  # all there, none twice
    assert set(by_sha) == set(kinds)
    assert not [p for p in inbox.rglob("*") if p.is_file()]  # the inbox is emptied
    for h, kind in kinds.items():
        top = by_sha[h].relative_to(out).parts[0]
        assert (top == "quarantine") == (kind == "bad")
    # camera subfolders are kept below the decision folders
    assert {p.relative_to(out).parts[1] for p in placed} == {"CA 01 ünï", "S90"}
    assert sum(stats.decisions.values()) == len(kinds)

    with Journal.open(out) as j:
        rows = j.frames()
        assert len(rows) == len(kinds)
        assert {r.state for r in rows if r.decision != "quarantine"} == {"done"}
        assert {r.state for r in rows if r.decision == "quarantine"} == {"quarantined"}
        reasons = {r.relpath: r.reason for r in rows if r.decision == "quarantine"}
        assert "empty file" in reasons["S90/zero.jpg"]
        assert reasons["S90/text.jpg"] and reasons["S90/cut.jpg"]
        for r in rows:
            if r.decision == "review":
                # what its overlay needs is kept; the picture is drawn when looked at
                assert r.has_overlay_data and r.overlay is None

    results = json.loads((out / "results" / "megadetector.json").read_text())
    files = {im["file"]: im for im in results["images"]}
    assert len(files) == len(kinds)
    failures = [im for im in files.values() if im.get("failure")]
    assert len(failures) == 3
    assert all((out / f).is_file() for f in files)


def test_the_pipelined_watcher_decides_as_the_serial_one(tiny_bundle: Path, tmp_path: Path):
    """Decoding and inference run ahead in other threads (lookahead), while the background
    models, bursts and overlays stay in frame order: every figure is the same as one batch at
    a time, including frames scored once a camera's background model is ready (10 frames)."""
    inbox = tmp_path / "in"
    fill_inbox(inbox, n_ca=14, n_peru=5)
    bundle = load_bundle(tiny_bundle)
    rows = {}
    for lookahead in (0, 2):
        out = tmp_path / f"out{lookahead}"
        run_once(
            bundle, options(inbox, out, copy=True, batch=3, lookahead=lookahead), Stats(out=out)
        )
        with Journal.open(out) as j:
            rows[lookahead] = {r.relpath: r for r in j.frames()}
        assert not [t.name for t in threading.enumerate() if t.name.startswith("edge-")]
    assert len(rows[2]) == len(rows[0]) == 22
    sources = set()
    for rel, serial in rows[0].items():
        piped = rows[2][rel]
        assert (piped.decision, piped.label, piped.dest) == (
            serial.decision,
            serial.label,
            serial.dest,
        )
        assert (piped.softmax, piped.overmap, piped.confidence) == (
            serial.softmax,
            serial.overmap,
            serial.confidence,
        )
        if serial.mask_source:
            sources.add(serial.mask_source)
            assert (piped.mask_source, piped.foreground, piped.top_k, piped.captured_at) == (
                serial.mask_source,
                serial.foreground,
                serial.top_k,
                serial.captured_at,
            )
    assert "combined" in sources  # the CA-01 background model was ready for the last frames


def test_copy_mode_leaves_the_card_untouched_and_a_rerun_adds_nothing(
    tiny_bundle: Path, tmp_path: Path
):
    inbox, out = tmp_path / "in", tmp_path / "out"
    fill_inbox(inbox)
    before = {p: (sha(p), p.stat().st_mtime_ns) for p in inbox.rglob("*") if p.is_file()}
    bundle = load_bundle(tiny_bundle)
    run_once(bundle, options(inbox, out, copy=True), Stats(out=out))
    after = {p: (sha(p), p.stat().st_mtime_ns) for p in inbox.rglob("*") if p.is_file()}
    assert before == after
    n = len(sorted_frames(out))
    assert n == len(before)

    stats = run_once(bundle, options(inbox, out, copy=True), Stats(out=out))
    assert sum(stats.decisions.values()) == 0  # nothing handled twice
    assert len(sorted_frames(out)) == n
    with Journal.open(out) as j:
        assert len(j.frames()) == n


def test_live_watcher_takes_frames_written_while_it_runs(tiny_bundle: Path, tmp_path: Path):
    inbox, out = tmp_path / "in", tmp_path / "out"
    (inbox / "cam").mkdir(parents=True)
    opts = options(inbox, out, rescan_interval=1.0)
    stats = Stats(out=out)
    t = threading.Thread(target=run_forever, args=(load_bundle(tiny_bundle), opts, stats))
    t.start()
    try:
        frames = sorted(CA01.iterdir())[:5]
        for p in frames[:4]:
            shutil.copy(p, inbox / "cam" / p.name)
        # one frame written slowly, in chunks, as a card reader or a camera would
        data = frames[4].read_bytes()
        with open(inbox / "cam" / frames[4].name, "wb") as f:
            for i in range(0, len(data), len(data) // 4 + 1):
                f.write(data[i : i + len(data) // 4 + 1])
                f.flush()
                time.sleep(0.15)
        deadline = time.monotonic() + 60
        while sum(stats.decisions.values()) < 5 and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        opts.stop.set()
        t.join(30)
    assert not t.is_alive()
    assert sum(stats.decisions.values()) == 5
    assert stats.decisions["quarantine"] == 0  # the slow frame waited until it was whole
    assert {sha(p) for p in sorted_frames(out)} == {sha(p) for p in frames}
    assert len(stats.latencies) == 5


def test_a_name_used_again_by_another_frame_is_decided_afresh(tiny_bundle: Path, tmp_path: Path):
    """A camera that restarts its numbering: the second a.jpg is another frame, with its own
    decision, even when it is the only frame of its batch as the first one was."""
    inbox, out = tmp_path / "in", tmp_path / "out"
    (inbox / "cam").mkdir(parents=True)
    opts = options(inbox, out)
    stats = Stats(out=out)
    t = threading.Thread(target=run_forever, args=(load_bundle(tiny_bundle), opts, stats))
    t.start()
    first, second = sorted(CA01.iterdir())[0], sorted(PERU.iterdir())[0]
    try:
        for n, source in enumerate((first, second), start=1):
            shutil.copy(source, inbox / "cam" / "a.jpg")
            deadline = time.monotonic() + 60
            while sum(stats.decisions.values()) < n and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        opts.stop.set()
        t.join(30)
    assert not t.is_alive()
    with Journal.open(out) as j:
        rows = [f for f in j.frames() if f.relpath == "cam/a.jpg"]
    assert [f.sha256 for f in rows] == [sha(first), sha(second)]
    assert all(f.state == "done" for f in rows)
    assert rows[0].softmax != rows[1].softmax  # not the first frame's decision handed back
    assert {sha(p) for p in sorted_frames(out)} == {sha(first), sha(second)}


def test_cli_refuses_a_missing_inbox_and_a_bad_bundle(tiny_bundle: Path, tmp_path: Path):
    r = runner.invoke(app, ["watch", str(tmp_path / "nope"), "--bundle", str(tiny_bundle)])
    assert r.exit_code == 2 and "no such folder" in flat(r.output)
    broken = tmp_path / "broken"
    shutil.copytree(tiny_bundle, broken)
    with open(broken / "classifier.onnx", "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01")
    (tmp_path / "in").mkdir()
    r = runner.invoke(app, ["watch", str(tmp_path / "in"), "--bundle", str(broken), "--once"])
    assert r.exit_code == 1 and "classifier.onnx" in flat(r.output)


@pytest.mark.parametrize(
    "args",
    [
        ["--delete-empty-after", "-1"],
        ["--delete-empty-after", "0"],
        ["--batch", "0"],
        ["--settle", "-1"],
        ["--threads", "0"],
    ],
)
def test_cli_refuses_numbers_out_of_range_before_touching_anything(
    tiny_bundle: Path, tmp_path: Path, args: list[str]
):
    inbox, out = tmp_path / "in", tmp_path / "out"
    (inbox / "cam").mkdir(parents=True)
    frame = Path(shutil.copy(sorted(CA01.iterdir())[0], inbox / "cam"))
    r = runner.invoke(
        app,
        [
            "watch",
            str(inbox),
            "--out",
            str(out),
            "--bundle",
            str(tiny_bundle),
            "--once",
            "--no-tui",
            *args,
        ],
    )
    assert r.exit_code == 2, r.output
    assert args[0] in flat(r.output) and "Traceback" not in r.output
    assert frame.exists() and not out.exists()


def test_no_copy_on_the_command_line_beats_copy_in_the_config(tiny_bundle: Path, tmp_path: Path):
    inbox, out = tmp_path / "in", tmp_path / "out"
    (inbox / "cam").mkdir(parents=True)
    frames = [Path(shutil.copy(p, inbox / "cam")) for p in sorted(CA01.iterdir())[:2]]
    config = tmp_path / "edge.toml"
    config.write_text("[watch]\ncopy = true\n")
    base = [
        "watch",
        str(inbox),
        "--out",
        str(out),
        "--bundle",
        str(tiny_bundle),
        "--once",
        "--no-tui",
        "--settle",
        "0.1",
        "--config",
        str(config),
    ]
    r = runner.invoke(app, [*base, "--no-copy"])
    assert r.exit_code == 0, r.output
    assert not any(p.exists() for p in frames)  # moved, as the flag says
    assert len(sorted_frames(out)) == 2


def test_cli_once_then_summary(tiny_bundle: Path, tmp_path: Path):
    inbox, out = tmp_path / "in", tmp_path / "out"
    fill_inbox(inbox, n_ca=3, n_peru=2)
    r = runner.invoke(
        app,
        [
            "watch",
            str(inbox),
            "--out",
            str(out),
            "--bundle",
            str(tiny_bundle),
            "--once",
            "--settle",
            "0.1",
            "--no-tui",
            "--tag",
            "0.93",
        ],
    )
    assert r.exit_code == 0, r.output
    # the results file says which thresholds sorted the frames: the flag's, not the bundle's
    info = json.loads((out / "results" / "megadetector.json").read_text())["info"]
    assert load_bundle(tiny_bundle).manifest.thresholds.get("tag") != 0.93
    assert info["overmap_edge"]["thresholds"]["tag"] == 0.93
    assert info["detector_metadata"]["typical_detection_threshold"] == 0.93
    r = runner.invoke(app, ["summary", str(out)])
    assert r.exit_code == 0
    assert "8 frames in the journal" in flat(r.output)
    assert "S90" in r.output and "CA 01" in r.output


@pytest.mark.parametrize(
    "kills",
    [pytest.param(4, id="4-kills"), pytest.param(20, id="20-kills", marks=pytest.mark.slow)],
)
def test_kill_9_while_frames_arrive_loses_and_duplicates_nothing(
    tiny_bundle: Path, tmp_path: Path, kills: int
):
    """The real `edge watch` process, SIGKILLed at random moments while frames keep landing."""
    rng = random.Random(kills)
    inbox, out = tmp_path / "in", tmp_path / "out"
    (inbox / "cam").mkdir(parents=True)
    sources = sorted(CA01.iterdir())[: 10 * kills]
    pending = list(sources)
    for _ in range(kills):
        proc = spawn_watcher(tiny_bundle, inbox, out)
        deadline = time.monotonic() + rng.uniform(1.5, 4.0)
        while time.monotonic() < deadline:
            if pending:
                p = pending.pop()
                tmp = inbox / "cam" / f".{p.name}.part"
                shutil.copy(p, tmp)
                os.replace(tmp, inbox / "cam" / p.name)
            time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    for p in pending:
        shutil.copy(p, inbox / "cam" / p.name)
    done = spawn_watcher(tiny_bundle, inbox, out, "--once")
    assert done.wait(120) == 0

    placed = sorted_frames(out)
    assert sorted(sha(p) for p in placed) == sorted(sha(p) for p in sources)
    assert not [p for p in inbox.rglob("*.jpg")]
    with Journal.open(out) as j:
        rows = j.frames()
    assert len(rows) == len(sources) and {r.state for r in rows} == {"done"}
    assert not [p for p in out.rglob("*edge-tmp")]


def test_empties_are_deleted_only_past_their_retention(tiny_bundle: Path, tmp_path: Path):
    from edge.journal import Decision
    from edge.watch import purge_empties

    out = tmp_path / "out"
    decisions = ["empty", "empty", "review", "tagged"]
    with Journal.open(out) as j:
        for i, d in enumerate(decisions):
            src = sorted(CA01.iterdir())[i]
            fid = j.record_seen(f"cam/{src.name}", src.stat().st_size, 0.0, sha(src))
            dest = f"{d}/cam/{src.name}"
            j.record_decision(fid, Decision(d, label="x"), dest)
            (out / dest).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, out / dest)
            j.mark_done(fid, dest)
        rows = j.frames()
        assert purge_empties(j, out, days=30) == 0  # all were sorted moments ago
        assert all((out / f.dest).exists() for f in rows)
        later = time.time() + 31 * 86400
        assert purge_empties(j, out, days=30, now=later) == 2
        for f in j.frames():
            assert (out / f.dest).exists() == (f.decision != "empty")
            assert f.state == ("deleted" if f.decision == "empty" else "done")
        assert len(j.frames()) == 4  # the journal keeps every row
        assert purge_empties(j, out, days=30, now=later) == 0  # nothing twice
        # the results file lists the files that are there, the summary counts every frame
        write_results(j, out, load_bundle(tiny_bundle).manifest)
        listed = json.loads((out / "results" / "megadetector.json").read_text())["images"]
        assert sorted(i["file"] for i in listed) == sorted(
            f.dest for f in j.frames() if f.decision != "empty"
        )
        console = Console(record=True, width=200)
        console.print(summary_text(j))
        assert "4 frames in the journal" in console.export_text()


def test_once_deletes_empties_past_their_retention_when_asked(tiny_bundle: Path, tmp_path: Path):
    """A batch run with --delete-empty-after purges too, not only the live watcher."""
    from edge.journal import Decision

    inbox, out = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    with Journal.open(out) as j:  # two empties sorted by an earlier run
        for src in sorted(CA01.iterdir())[:2]:
            fid = j.record_seen(f"cam/{src.name}", src.stat().st_size, 0.0, sha(src))
            dest = f"empty/cam/{src.name}"
            j.record_decision(fid, Decision("empty", label="x"), dest)
            (out / dest).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, out / dest)
            j.mark_done(fid, dest)
        rows = j.frames()
    # the first was sorted 40 days ago (the journal is a real SQLite file: set its time)
    with sqlite3.connect(out / "journal.sqlite") as db:
        db.execute("UPDATE frames SET done_at = done_at - 40 * 86400 WHERE id = ?", (rows[0].id,))
    db.close()
    args = [
        "watch",
        str(inbox),
        "--out",
        str(out),
        "--bundle",
        str(tiny_bundle),
        "--once",
        "--no-tui",
        "--delete-empty-after",
        "30",
    ]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert [(out / f.dest).exists() for f in rows] == [False, True]


def test_a_full_output_disk_pauses_the_watcher_and_loses_nothing(
    tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import edge.loop
    import edge.sink
    from edge.sink import DiskFullError

    real_place = edge.sink.place
    failures = {"left": 3}
    statuses: list[str] = []

    def full_then_fine(*args, **kwargs):
        if failures["left"] > 0:
            failures["left"] -= 1
            raise DiskFullError("no space left on device (simulated)")
        return real_place(*args, **kwargs)

    monkeypatch.setattr(edge.sink, "place", full_then_fine)
    monkeypatch.setattr(edge.loop, "DISK_FULL_RETRY", 0.2)
    inbox, out = tmp_path / "in", tmp_path / "out"
    (inbox / "cam").mkdir(parents=True)
    frames = sorted(CA01.iterdir())[:4]
    for p in frames:
        shutil.copy(p, inbox / "cam" / p.name)
    opts = options(inbox, out)
    stats = Stats(out=out)
    t = threading.Thread(
        target=run_forever,
        args=(load_bundle(tiny_bundle), opts, stats),
        kwargs={"on_tick": lambda: statuses.append(stats.status)},
    )
    t.start()
    try:
        deadline = time.monotonic() + 60
        while len(sorted_frames(out)) < 4 and time.monotonic() < deadline:
            statuses.append(stats.status)
            time.sleep(0.05)
    finally:
        opts.stop.set()
        t.join(30)
    assert any(s.startswith("paused") and "no space" in s for s in statuses)  # it said so
    assert failures["left"] == 0
    assert {sha(p) for p in sorted_frames(out)} == {sha(p) for p in frames}  # nothing lost
    assert stats.status == "watching"
    with Journal.open(out) as j:
        assert [r.state for r in j.frames()] == ["done"] * 4  # once each


def test_a_full_output_disk_stops_a_batch_run_which_a_rerun_finishes(
    tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """--once does not wait for ever on a full disk: it says so, stops, loses nothing."""
    import edge.sink
    from edge.sink import DiskFullError

    real_place = edge.sink.place
    placed = {"n": 0}

    def full_after_two(*args, **kwargs):
        if placed["n"] >= 2:
            raise DiskFullError("no space left on device (simulated)")
        placed["n"] += 1
        return real_place(*args, **kwargs)

    inbox, out = tmp_path / "in", tmp_path / "out"
    (inbox / "cam").mkdir(parents=True)
    frames = sorted(CA01.iterdir())[:5]
    for p in frames:
        shutil.copy(p, inbox / "cam" / p.name)
    bundle = [str(tiny_bundle)]
    args = [
        "watch",
        str(inbox),
        "--out",
        str(out),
        "--bundle",
        *bundle,
        "--once",
        "--no-tui",
        "--settle",
        "0.1",
    ]
    monkeypatch.setattr(edge.sink, "place", full_after_two)
    r = runner.invoke(app, args)
    assert r.exit_code == 1, r.output
    assert "stopped:" in r.output and "no space left" in r.output
    assert "Nothing is lost" in flat(r.output)
    assert len(sorted_frames(out)) == 2 and len(list((inbox / "cam").iterdir())) == 3

    monkeypatch.setattr(edge.sink, "place", real_place)  # space was freed
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert {sha(p) for p in sorted_frames(out)} == {sha(p) for p in frames}
    with Journal.open(out) as j:
        assert [r.state for r in j.frames()] == ["done"] * 5


def test_the_review_queue_counts_what_waits_in_review_not_this_run_alone(
    tiny_bundle: Path, tmp_path: Path
):
    inbox, out = tmp_path / "in", tmp_path / "out"
    (inbox / "cam").mkdir(parents=True)
    sources = sorted(CA01.iterdir())
    for p in sources[:4]:
        shutil.copy(p, inbox / "cam")
    # tag nothing, so every frame waits for a person
    opts = options(inbox, out, thresholds={"tag": 1.0, "empty": 1.0, "empty_foreground": 0.0})
    first = run_once(load_bundle(tiny_bundle), opts, Stats(out=out))
    assert first.review_queue == first.decisions["review"] == 4
    reviewed = next((out / "review" / "cam").glob("*.jpg"))
    reviewed.unlink()  # a person dealt with one
    for p in sources[4:6]:
        shutil.copy(p, inbox / "cam")
    second = run_once(
        load_bundle(tiny_bundle), options(inbox, out, thresholds=opts.thresholds), Stats(out=out)
    )
    assert second.seen == 2 and second.decisions["review"] == 2
    assert second.review_queue == 3 + 2  # the earlier run's three still waiting, and two new
    console = Console(record=True, width=200)
    console.print(render_dashboard(second))
    text = console.export_text()
    assert "review queue 5" in text and "seen 2 this run" in text


def test_the_live_dashboard_runs_in_a_terminal_and_stops_on_sigterm(
    tiny_bundle: Path, tmp_path: Path
):
    """The rich dashboard as a ranger sees it: in a real pseudo-terminal, frames arriving."""
    import pty

    inbox, out = tmp_path / "in", tmp_path / "out"
    (inbox / "cam").mkdir(parents=True)
    master, slave = pty.openpty()
    env = {**os.environ, "COLUMNS": "120", "LINES": "40", "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge.cli",
            "watch",
            str(inbox),
            "--out",
            str(out),
            "--bundle",
            str(tiny_bundle),
            "--settle",
            "0.1",
        ],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        close_fds=True,
    )
    os.close(slave)
    screen = bytearray()

    def read_until(cond, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not cond() and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    screen.extend(os.read(master, 65536))
                except OSError:  # the child closed the terminal
                    return

    try:
        read_until(lambda: b"overmap-edge watch" in screen)
        for p in sorted(CA01.iterdir())[:3]:
            shutil.copy(p, inbox / "cam")
        read_until(
            lambda: (
                all((out / "journal.sqlite").exists() and f.state == "done" for f in _rows(out))
                and len(_rows(out)) == 3
            )
        )
        time.sleep(1.0)  # a refresh or two of the dashboard
        proc.send_signal(signal.SIGTERM)
        read_until(lambda: proc.poll() is not None and b"results:" in screen, timeout=30)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.decode("utf-8", "replace"))
    assert "overmap-edge watch" in text and "review queue" in text and "disk free" in text
    assert "seen 3 this run" in text  # the last frame of the dashboard counted them
    assert "Traceback" not in text
    assert "results:" in text


def _rows(out: Path) -> list:
    if not (out / "journal.sqlite").exists():
        return []
    with Journal.open(out) as j:
        return j.frames()


def test_the_journal_says_where_each_frame_time_came_from(tiny_bundle: Path, tmp_path: Path):
    """EXIF DateTimeOriginal, or the file's time (which a copy sets to when it was copied):
    the Camtrap DP export trusts the one and not the other, so the journal keeps which."""
    import cv2

    inbox, out = tmp_path / "in", tmp_path / "out"
    (inbox / "S90").mkdir(parents=True)
    src = sorted(PERU.iterdir())[0]
    shutil.copy(src, inbox / "S90" / "exif.jpg")
    ok, data = cv2.imencode(".jpg", cv2.imread(str(src)))  # re-encoded: no EXIF block
    (inbox / "S90" / "bare.jpg").write_bytes(data.tobytes())
    os.utime(inbox / "S90" / "bare.jpg", (1_700_000_000, 1_700_000_000))  # whole seconds
    run_once(load_bundle(tiny_bundle), options(inbox, out), Stats(out=out))
    with Journal.open(out) as j:
        rows = {f.relpath: f for f in j.frames()}
    assert rows["S90/exif.jpg"].time_source == "exif"
    assert rows["S90/exif.jpg"].captured_at.year == 2014
    assert rows["S90/bare.jpg"].time_source == "file"
    assert rows["S90/bare.jpg"].captured_at == datetime.fromtimestamp(1_700_000_000)
