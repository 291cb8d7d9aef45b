"""Discovery: scan filters and loops, the watcher (inotify and polling), the stability gate."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import cv2
import pytest

from edge import discover
from edge.discover import CandidateQueue, Watcher, mount_fstype, needs_polling, scan
from edge.journal import Journal
from edge.stability import StabilityGate, jpeg_state

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"

FRAMES = SHARED / "camtrap/mlwic_examples/CA-01"


def _frame(i: int = 0) -> Path:
    return sorted(FRAMES.glob("*.jpg"))[i]


def _png_of(frame: Path) -> bytes:
    """A real frame re-encoded as PNG: a real image that is no JPEG."""
    ok, buf = cv2.imencode(".png", cv2.imread(str(frame)))
    assert ok
    return buf.tobytes()


class _Clock:
    """A clock the test moves by hand, so give_up is reached without waiting for it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _wait_for(cond, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return False


def test_scan_filters_names_and_excludes_out(tmp_path: Path) -> None:
    inbox = tmp_path / "in"
    for rel in [
        "cam1/a.jpg",
        "cam1/B.JPEG",
        "cam2/c.png",
        "d.tif",
        "cam1/.hidden.jpg",
        "cam1/e.jpg.part",
        "cam1/f.tmp",
        "cam1/~g.jpg",
        "cam1/notes.txt",
        ".thumbs/h.jpg",
        "out/tagged/x.jpg",
    ]:
        p = inbox / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    found = {p.relative_to(inbox).as_posix() for p in scan(inbox, exclude=[inbox / "out"])}
    assert found == {"cam1/a.jpg", "cam1/B.JPEG", "cam2/c.png", "d.tif"}


@pytest.mark.timeout(20)
def test_scan_survives_symlink_loop(tmp_path: Path) -> None:
    inbox = tmp_path / "in"
    (inbox / "cam" / "deep").mkdir(parents=True)
    (inbox / "cam" / "a.jpg").write_bytes(b"x")
    os.symlink(inbox, inbox / "cam" / "deep" / "loop")
    os.symlink("..", inbox / "cam" / "up")
    found = list(scan(inbox))
    assert [p.name for p in found] == ["a.jpg"]


def test_scan_skips_unreadable_folder(tmp_path: Path, monkeypatch, caplog) -> None:
    """Tests run as root, where chmod 000 does not stop reading: refuse through scandir."""
    inbox = tmp_path / "in"
    (inbox / "locked").mkdir(parents=True)
    (inbox / "locked" / "a.jpg").write_bytes(b"x")
    (inbox / "open").mkdir()
    (inbox / "open" / "b.jpg").write_bytes(b"x")
    real = os.scandir

    def scandir(path):
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(discover.os, "scandir", scandir)
    assert [p.name for p in scan(inbox)] == ["b.jpg"]
    assert "locked" in caplog.text


def test_mount_fstype_picks_longest_mount(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "/dev/vda / ext4 rw 0 0\n"
        "/dev/sda1 /media/card\\040one vfat rw 0 0\n"
        "server:/x /mnt/nas nfs4 rw 0 0\n"
    )
    assert mount_fstype("/media/card one/DCIM", str(mounts)) == "vfat"
    assert mount_fstype("/mnt/nas/a", str(mounts)) == "nfs4"
    assert mount_fstype("/home/x", str(mounts)) == "ext4"
    assert not needs_polling(tmp_path)  # the test folder is a local disk


def test_queue_is_bounded_and_deduplicates() -> None:
    q = CandidateQueue(maxsize=3)
    assert q.put(Path("a"), block=False) and q.put(Path("a"), block=False)
    assert q.put(Path("b"), block=False) and q.put(Path("c"), block=False)
    assert not q.put(Path("d"), block=False)
    assert not q.put(Path("d"), timeout=0.05)
    assert len(q) == 3 and q.high_water == 3
    assert q.get_batch(2) == [Path("a"), Path("b")]
    assert q.get_batch(10, timeout=0.01) == [Path("c")]
    assert q.get_batch(10, timeout=0.01) == []


@pytest.mark.parametrize("polling", [False, True])
def test_watcher_sees_new_frames(tmp_path: Path, polling: bool) -> None:
    inbox = tmp_path / "in"
    (inbox / "cam0").mkdir(parents=True)
    (inbox / "cam0" / "old.jpg").write_bytes(b"x")
    got: set[str] = set()
    with Watcher(inbox, use_polling=polling, poll_interval=0.1, check_interval=0.1) as w:
        assert _wait_for(lambda: w.polling is not None)
        assert w.polling is polling
        (inbox / "cam1").mkdir()
        (inbox / "cam1" / "new.jpg").write_bytes(b"x")
        (inbox / "cam1" / "skip.txt").write_bytes(b"x")

        def collect() -> bool:
            got.update(p.name for p in w.get_batch(100, timeout=0.05))
            return got >= {"old.jpg", "new.jpg"}

        assert _wait_for(collect)
    assert "skip.txt" not in got


@pytest.mark.parametrize("polling", [False, True])
def test_watched_folder_removed_and_recreated(tmp_path: Path, polling: bool) -> None:
    """A card pulled and put back: no crash, frames written after it returns are found."""
    inbox = tmp_path / "card"
    inbox.mkdir()
    got: set[str] = set()

    def collect(name: str):
        def f() -> bool:
            got.update(p.name for p in w.get_batch(100, timeout=0.05))
            return name in got

        return f

    with Watcher(inbox, use_polling=polling, poll_interval=0.1, check_interval=0.1) as w:
        (inbox / "a.jpg").write_bytes(b"x")
        assert _wait_for(collect("a.jpg"))
        shutil.rmtree(inbox)
        time.sleep(0.5)
        inbox.mkdir()
        (inbox / "sub").mkdir()
        (inbox / "sub" / "b.jpg").write_bytes(b"x")
        assert _wait_for(collect("b.jpg"))
        (inbox / "sub" / "c.jpg").write_bytes(b"x")
        assert _wait_for(collect("c.jpg"))
        assert w._thread is not None and w._thread.is_alive()


def test_jpeg_state_on_real_cut_and_padded_frames(tmp_path: Path) -> None:
    data = _frame(0).read_bytes()
    assert jpeg_state(_frame(0)) == "whole"
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 2])
    assert jpeg_state(cut) == "cut"
    padded = tmp_path / "padded.jpg"
    padded.write_bytes(data + b"\x00" * 100)
    assert jpeg_state(padded) == "whole"
    (tmp_path / "png.jpg").write_bytes(b"\x89PNG" + b"\x00" * 10)
    assert jpeg_state(tmp_path / "png.jpg") == "other"


def test_gate_waits_for_a_slow_writer(tmp_path: Path) -> None:
    data = _frame(0).read_bytes()
    path = tmp_path / "slow.jpg"
    gate = StabilityGate(settle=0.15, give_up=30)
    done = threading.Event()

    def write() -> None:
        with open(path, "wb") as f:
            for i in range(0, len(data), 4096):
                f.write(data[i : i + 4096])
                f.flush()
                time.sleep(0.01)
        done.set()

    t = threading.Thread(target=write)
    path.write_bytes(b"")
    gate.add(path)
    t.start()
    verdicts = []
    while not verdicts:
        verdicts = gate.poll()
        if not verdicts:
            time.sleep(0.02)
    t.join()
    assert verdicts[0].status == "whole" and done.is_set()
    assert path.read_bytes() == data


def test_gate_gives_up_on_a_truncated_frame(tmp_path: Path) -> None:
    path = tmp_path / "cut.jpg"
    path.write_bytes(_frame(0).read_bytes()[:9000])
    gate = StabilityGate(settle=0.05, give_up=0.3)
    gate.add(path)
    verdicts = []
    end = time.monotonic() + 5
    while not verdicts and time.monotonic() < end:
        verdicts = gate.poll()
        time.sleep(0.02)
    (v,) = verdicts
    assert v.status == "unreadable" and "truncated JPEG" in (v.reason or "")


def test_gate_rejects_undecodable_png_and_reports_gone(tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"junk" * 100)
    gone = tmp_path / "gone.jpg"
    shutil.copy(_frame(0), gone)
    gate = StabilityGate(settle=0.0, give_up=0.0)
    gate.add(bad)
    gate.add(gone)
    gone.unlink()
    out = {v.path.name: v for v in gate.poll()}
    assert out["gone.jpg"].status == "gone"
    assert out["bad.png"].status == "unreadable" and "decodable" in (out["bad.png"].reason or "")


def test_jpeg_state_tells_a_cut_jpeg_from_no_jpeg_at_all(tmp_path: Path) -> None:
    data = _frame(0).read_bytes()
    files = {
        "whole.jpg": data,
        "cut.jpg": data[: len(data) // 2],
        "soi_only.jpg": data[:2],
        "png.jpg": _png_of(_frame(0)),
        "text.jpg": b"this is not a picture\n",
        "ff.jpg": b"\xff",  # the first byte of an SOI: too few to tell
        "empty.jpg": b"",
    }
    for name, raw in files.items():
        (tmp_path / name).write_bytes(raw)
    assert {n: jpeg_state(tmp_path / n) for n in files} == {
        "whole.jpg": "whole",
        "cut.jpg": "cut",
        "soi_only.jpg": "cut",
        "png.jpg": "other",
        "text.jpg": "other",
        "ff.jpg": "short",
        "empty.jpg": "short",
    }
    with pytest.raises(OSError):
        jpeg_state(tmp_path / "missing.jpg")


@pytest.mark.parametrize("decode", [False, True])
def test_gate_does_not_call_a_file_that_is_no_jpeg_truncated(tmp_path: Path, decode: bool) -> None:
    """A text file or a PNG named .jpg has no SOI: it is no JPEG being written, so the gate
    neither waits for an end marker nor calls it truncated. The PNG is whole; the text file
    is whole to a gate that does not decode (the decoder quarantines it) and not a decodable
    image to one that does. A real JPEG cut short is still truncated."""
    data = _frame(0).read_bytes()
    files = {
        "text.jpg": b"this is not a picture\n",
        "png.jpg": _png_of(_frame(0)),
        "cut.jpg": data[:9000],
        "ff.jpg": b"\xff",
    }
    for name, raw in files.items():
        (tmp_path / name).write_bytes(raw)
    clock = _Clock()
    gate = StabilityGate(settle=1.0, give_up=60.0, decode=decode, clock=clock)
    for name in files:
        gate.add(tmp_path / name)
    clock.now = 1.0  # settled, far from give_up
    early = {v.path.name: (v.status, v.reason) for v in gate.poll()}
    if decode:  # the text file fails to decode: the gate waits for it as for any such frame
        assert early == {"png.jpg": ("whole", None)}
        assert len(gate) == 3
    else:
        assert early == {"png.jpg": ("whole", None), "text.jpg": ("whole", None)}
        assert len(gate) == 2  # the cut JPEG and the one-byte file may still be growing
    clock.now = 61.0
    late = {v.path.name: (v.status, v.reason) for v in gate.poll()}
    expected = {
        "cut.jpg": ("unreadable", "truncated JPEG (no end-of-image marker) after 60 s"),
        "ff.jpg": ("unreadable", "too short to be an image (1 byte) after 60 s"),
    }
    if decode:
        expected["text.jpg"] = (
            "unreadable",
            "not a decodable image (corrupt, truncated or not an image) after 60 s",
        )
    assert late == expected
    assert len(gate) == 0


def test_gate_waits_for_a_one_byte_file_to_grow_into_a_jpeg(tmp_path: Path) -> None:
    """One byte held still over `settle` is too few to say it is no JPEG: the gate waits,
    and the frame written after it is whole."""
    data = _frame(0).read_bytes()
    path = tmp_path / "slow.jpg"
    path.write_bytes(data[:1])
    clock = _Clock()
    gate = StabilityGate(settle=1.0, give_up=60.0, decode=False, clock=clock)
    gate.add(path)
    clock.now = 1.0
    assert gate.poll() == [] and len(gate) == 1
    path.write_bytes(data)
    clock.now = 2.0
    assert gate.poll() == []  # it grew: one more look to see it hold still
    clock.now = 3.0
    (v,) = gate.poll()
    assert (v.path, v.status) == (path, "whole")


def test_watch_quarantines_a_text_jpg_as_no_image_and_sorts_a_png_jpg(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    """End to end through `edge watch --once`: the reason the journal and the results file
    record for a text file named .jpg says it is not an image, not that it is truncated; a
    PNG named .jpg is decoded and sorted; a JPEG cut short is quarantined as truncated."""
    from edge.bundle import load_bundle
    from edge.tui import Stats
    from edge.watch import WatchOptions, run_once

    inbox, out = tmp_path / "in", tmp_path / "out"
    (inbox / "cam").mkdir(parents=True)
    (inbox / "cam" / "text.jpg").write_bytes(b"this is not a picture\n")
    (inbox / "cam" / "png.jpg").write_bytes(_png_of(_frame(1)))
    (inbox / "cam" / "cut.jpg").write_bytes(_frame(2).read_bytes()[:9000])
    opts = WatchOptions(
        inbox=inbox,
        out=out,
        settle=0.1,
        give_up=2.0,
        thresholds={"tag": 0.6, "empty": 0.8, "empty_foreground": 0.02},
    )
    run_once(load_bundle(tiny_bundle), opts, Stats(out=out))
    with Journal.open(out) as j:
        rows = {r.relpath: r for r in j.frames()}
    assert set(rows) == {"cam/text.jpg", "cam/png.jpg", "cam/cut.jpg"}
    text, png, cut = rows["cam/text.jpg"], rows["cam/png.jpg"], rows["cam/cut.jpg"]
    assert (text.decision, text.state) == ("quarantine", "quarantined")
    assert text.reason == "not a decodable image (corrupt, truncated or not an image)"
    assert (cut.decision, cut.state) == ("quarantine", "quarantined")
    assert cut.reason == "truncated JPEG (no end-of-image marker) after 2 s"
    assert png.decision in ("empty", "tagged", "review") and png.state == "done"
    assert png.reason is None and (out / png.dest).is_file()
    assert not [p for p in inbox.rglob("*") if p.is_file()]
    results = json.loads((out / "results" / "megadetector.json").read_text())
    failures = {im["file"]: im.get("failure") for im in results["images"]}
    assert failures[text.dest] == text.reason
    assert failures[cut.dest] == cut.reason
    assert failures[png.dest] is None
