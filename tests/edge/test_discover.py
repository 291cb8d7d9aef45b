"""Discovery: scan filters and loops, the watcher (inotify and polling), the stability gate."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from edge import discover
from edge.discover import CandidateQueue, Watcher, mount_fstype, needs_polling, scan
from edge.stability import StabilityGate, is_complete_jpeg

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"

FRAMES = (SHARED / "camtrap/mlwic_examples/CA-01")


def _frame(i: int = 0) -> Path:
    return sorted(FRAMES.glob("*.jpg"))[i]


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


def test_is_complete_jpeg_on_real_and_cut_frames(tmp_path: Path) -> None:
    data = _frame(0).read_bytes()
    assert is_complete_jpeg(_frame(0))
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 2])
    assert not is_complete_jpeg(cut)
    padded = tmp_path / "padded.jpg"
    padded.write_bytes(data + b"\x00" * 100)
    assert is_complete_jpeg(padded)
    (tmp_path / "png.jpg").write_bytes(b"\x89PNG" + b"\x00" * 10)
    assert not is_complete_jpeg(tmp_path / "png.jpg")


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
