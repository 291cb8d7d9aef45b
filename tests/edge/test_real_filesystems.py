"""The watcher on real filesystems: a full output disk, an SD card (FAT), moves across two.

Elsewhere a full disk, FAT and moves across filesystems are simulated (patched errors, a fake
mounts file). Here the kernel does it: OUT on a small tmpfs that really runs out of space, an
inbox on a FAT image mounted read-write by fusefat (FUSE, as a card reader without the kernel's
vfat module), an inbox on a tmpfs so that a move is a copy to another filesystem (EXDEV).
Mounting needs root (CAP_SYS_ADMIN) and, for FAT, mkfs.vfat (Debian: dosfstools), fusefat and
/dev/fuse; without them a test skips and says why. Every mount is undone when its test ends,
whatever happened, lazily (umount -l) when it is still busy.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

import edge.loop
import edge.sink
import edge.watch
from edge.bundle import load_bundle
from edge.cli import app
from edge.discover import mount_fstype, needs_polling, scan
from edge.journal import JOURNAL_NAME, Journal
from edge.tui import Stats
from edge.watch import WatchOptions, run_forever, run_once

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
CA01 = DATA / "camtrap" / "mlwic_examples" / "CA-01"  # 256x256, about 36 KB each
PERU = DATA / "camtrap" / "peru_s90_animl" / "S90_SDZG1"  # 768x576, 55-275 KB each
IMAGE_EXTS = {".jpg", ".jpeg", ".png"}
SORTED = ("empty", "tagged", "review", "quarantine")
TIMEOUT = 60.0  # seconds to wait for the watcher: a hang fails the test instead of blocking
# OUT's free space in the full-disk tests, and the write it runs out on (measured here, with
# 8 CA-01 frames in batches of 4; elsewhere it may be another write, the test holds the
# same). A frame takes about 72 KB in OUT with the test bundle, which sends every frame to
# review: the frame (36 KB), its overlay (30 KB, written while the batch is decided), its
# sidecar (one 4 KB page); the journal 4 KB, its -shm 32 KB and a WAL that grows by 4 KB
# pages. Below 64 KB the journal cannot even be opened.
ROOMS = {"overlay": 120, "journal": 216, "sidecar": 256, "frame": 320}  # KB
runner = CliRunner()

pytestmark = pytest.mark.timeout(180)


def flat(text: str) -> str:
    """Rich wraps to the terminal's width; compare words, not line breaks."""
    return " ".join(text.split())


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sources(n: int, *, start: int = 0, folder: Path = CA01) -> list[Path]:
    if not folder.is_dir():
        pytest.skip(f"reference data missing: {folder}")
    return sorted(folder.iterdir())[start : start + n]


def drop(folder: Path, frames: list[Path]) -> None:
    """Copy frames into `folder` as a card reader would: bytes only (FAT has no modes, so
    shutil.copy's chmod fails there with ENOSYS)."""
    folder.mkdir(parents=True, exist_ok=True)
    for p in frames:
        shutil.copyfile(p, folder / p.name)


def sorted_frames(out: Path) -> list[Path]:
    return [
        p
        for d in SORTED
        if (out / d).is_dir()
        for p in (out / d).rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_EXTS
    ]


def inbox_frames(inbox: Path) -> list[Path]:
    return [p for p in inbox.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS]


def temps(out: Path) -> list[str]:
    """The sink's temp files (`.*.edge-tmp`) anywhere under OUT."""
    return [p.name for p in out.rglob(".*.edge-tmp")]


def where(frames: list[Path], inbox: Path, out: Path) -> dict[str, tuple[int, int]]:
    """For each source frame: (copies in the inbox, copies sorted in OUT)."""
    in_inbox = Counter(sha(p) for p in inbox_frames(inbox))
    placed = Counter(sha(p) for p in sorted_frames(out))
    return {p.name: (in_inbox[sha(p)], placed[sha(p)]) for p in frames}


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


def journal_rows(out: Path) -> list[tuple[str, str]]:
    """(sha256, state) of every journal row."""
    with Journal.open(out) as j:
        return [(r.sha256, r.state) for r in j.frames()]


def done(out: Path) -> int:
    """Journal rows done: placed and recorded, not only decided."""
    return sum(state == "done" for _, state in journal_rows(out))


def assert_each_once(frames: list[Path], inbox: Path, out: Path) -> None:
    """Every frame sorted exactly once with its bytes, none left behind, journaled once."""
    shas = Counter(sha(p) for p in frames)
    assert Counter(sha(p) for p in sorted_frames(out)) == shas
    assert not inbox_frames(inbox)
    rows = journal_rows(out)
    assert Counter(h for h, _ in rows) == shas
    assert {s for _, s in rows} == {"done"}
    assert not temps(out)
    db = sqlite3.connect(f"file:{out / JOURNAL_NAME}?mode=ro", uri=True)
    try:  # the journal came through ENOSPC whole
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        db.close()


# -- mounts ---------------------------------------------------------------------------------


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except FileNotFoundError as e:
        return subprocess.CompletedProcess(cmd, 127, "", str(e))


def _why(r: subprocess.CompletedProcess[str]) -> str:
    """The last line a failed command wrote (fusefat says a lot before it)."""
    lines = [line.strip() for line in r.stderr.splitlines() if line.strip() and "dmesg" not in line]
    return lines[-1] if lines else f"exit code {r.returncode}"


def _mounted(point: Path) -> bool:
    with open("/proc/mounts", encoding="utf-8") as f:
        return any(line.split()[1] == str(point) for line in f if len(line.split()) > 1)


class Mounts:
    """Mounts made by one test; `undo` unmounts them all, lazily when one is still busy."""

    def __init__(self) -> None:
        self.points: list[Path] = []

    def tmpfs(self, point: Path, size: str) -> Path:
        if shutil.which("mount") is None:
            pytest.skip("no mount command here")
        point.mkdir(parents=True, exist_ok=True)
        r = _run("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point))
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {_why(r)}")
        self.points.append(point)
        return point

    def fat(self, image: Path, point: Path, size_mb: int = 32) -> Path:
        """A FAT32 image of `size_mb` MB made by mkfs.vfat, mounted read-write by fusefat."""
        for tool in ("mkfs.vfat", "fusefat", "umount"):
            if shutil.which(tool) is None:
                pytest.skip(f"{tool} is missing (Debian: apt-get install dosfstools fusefat)")
        if not os.path.exists("/dev/fuse"):
            pytest.skip("no /dev/fuse here")
        with open(image, "wb") as f:
            f.truncate(size_mb << 20)
        r = _run("mkfs.vfat", "-F", "32", "-n", "CARD", str(image))
        if r.returncode != 0:
            pytest.skip(f"mkfs.vfat failed: {_why(r)}")
        point.mkdir(parents=True, exist_ok=True)
        r = _run("fusefat", "-o", "rw+", str(image), str(point))  # rw+: read-write
        if r.returncode != 0 or not _mounted(point):
            pytest.skip(f"cannot mount a FAT image with fusefat: {_why(r)}")
        self.points.append(point)
        return point

    def undo(self) -> None:
        """Unmount; when still busy (a watcher that hung), detach it lazily."""
        for point in reversed(self.points):
            for cmd in (["umount"], ["fusermount", "-u"], ["umount", "-l"], ["fusermount", "-uz"]):
                if not _mounted(point):
                    break
                _run(*cmd, str(point))
        self.points.clear()


@pytest.fixture
def mounts() -> Iterator[Mounts]:
    m = Mounts()
    try:
        yield m
    finally:
        m.undo()


def fill(folder: Path, leave: int = 0) -> Path:
    """A file that takes all the free space of `folder`'s filesystem but `leave` bytes
    (written, not sparse: tmpfs counts only written pages); leave=0 fills it to the last byte."""
    path = folder / "filler.bin"
    st = os.statvfs(folder)
    todo = max(0, st.f_bavail * st.f_frsize - leave)
    block = b"\xa5" * (64 << 10)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        while todo > 0:
            todo -= os.write(fd, block[: min(len(block), todo)])
        while leave == 0:
            os.write(fd, block[:4096])
    except OSError as e:
        if e.errno != errno.ENOSPC or leave:
            raise
    finally:
        os.close(fd)
    return path


# -- the live watcher -----------------------------------------------------------------------


class Live:
    """run_forever in a thread; an exception that ends it is kept in `errors`, not lost."""

    def __init__(self, bundle: Path, opts: WatchOptions) -> None:
        self.opts = opts
        self.stats = Stats(out=opts.out)
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(
            target=self._run, args=(load_bundle(bundle),), name="test-watcher"
        )

    def _run(self, bundle) -> None:
        try:
            run_forever(bundle, self.opts, self.stats)
        except BaseException as e:  # noqa: BLE001 - the test reports it
            self.errors.append(e)

    def __enter__(self) -> Live:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.opts.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the watcher did not stop within 30 s"

    def wait_for(self, cond: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if self.errors:
                raise AssertionError(f"the watcher died waiting for {what}") from self.errors[0]
            if time.monotonic() > deadline:
                pytest.fail(
                    f"timed out after {timeout:g} s waiting for {what} "
                    f"(status: {self.stats.status!r})"
                )
            time.sleep(0.02)


# -- 1. a full output disk ------------------------------------------------------------------


@pytest.mark.parametrize("room", ROOMS.values(), ids=ROOMS.keys())
def test_a_live_watcher_pauses_on_a_really_full_disk_and_resumes_once_there_is_room(
    tiny_bundle: Path, tmp_path: Path, mounts: Mounts, monkeypatch: pytest.MonkeyPatch, room: int
):
    out = mounts.tmpfs(tmp_path / "out", "4m")
    inbox = tmp_path / "in"
    frames = sources(8)
    drop(inbox / "cam", frames)
    filler = fill(out, leave=room << 10)
    monkeypatch.setattr(edge.loop, "DISK_FULL_RETRY", 1.0)  # a quiet second to look around
    with Live(tiny_bundle, options(inbox, out)) as w:
        w.wait_for(lambda: w.stats.status.startswith("paused"), "the watcher to pause")
        status = w.stats.status
        # within the second it waits: each frame is in the inbox or sorted, never both
        found = where(frames, inbox, out)
        assert set(found.values()) <= {(1, 0), (0, 1)}, (status, found)
        assert (1, 0) in found.values(), (status, found)  # it did stop
        assert not temps(out)
        assert not list(out.rglob("*.tmp"))  # an overlay or results file cut short is gone
        assert "no space left" in status

        filler.unlink()  # room again: the same watcher carries on
        w.wait_for(
            lambda: done(out) == len(frames) and w.stats.status == "watching",
            "every frame sorted after the pause",
        )
    assert not w.errors
    assert_each_once(frames, inbox, out)
    assert not list(out.rglob("*.tmp"))  # an overlay cut short was written again, whole
    assert sum(w.stats.decisions.values()) == len(frames)  # a batch decided again counts once


@pytest.mark.parametrize("room", [ROOMS["journal"], ROOMS["overlay"]], ids=["journal", "overlay"])
def test_a_batch_run_stops_on_a_really_full_disk_and_a_rerun_finishes(
    tiny_bundle: Path, tmp_path: Path, mounts: Mounts, room: int
):
    out = mounts.tmpfs(tmp_path / "out", "4m")
    inbox = tmp_path / "in"
    frames = sources(8)
    drop(inbox / "cam", frames)
    filler = fill(out, leave=room << 10)
    args = [
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
        "--batch",
        "4",
    ]
    r = runner.invoke(app, args)
    assert r.exit_code == 1, r.output
    assert isinstance(r.exception, SystemExit), r.exception  # a message, not a traceback
    assert "Traceback" not in r.output
    assert "stopped:" in r.output and "no space left" in flat(r.output)
    assert "Nothing is lost" in flat(r.output)
    found = where(frames, inbox, out)
    assert set(found.values()) <= {(1, 0), (0, 1)}, found
    assert (1, 0) in found.values(), found
    assert not temps(out)
    assert not list(out.rglob("*.tmp"))

    filler.unlink()
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert_each_once(frames, inbox, out)
    assert not list(out.rglob("*.tmp"))


def test_a_full_disk_that_stops_the_journal_pauses_and_loses_nothing(
    tiny_bundle: Path, tmp_path: Path, mounts: Mounts, monkeypatch: pytest.MonkeyPatch
):
    """Frames that arrive once OUT is full to the last byte: the first write is the journal's
    (recording them as seen). It pauses with none of them journaled and takes them once there
    is room; stopped while paused (Ctrl-C), it stops cleanly and the next run takes them."""
    out = mounts.tmpfs(tmp_path / "out", "4m")
    inbox = tmp_path / "in"
    first, second, third = sources(2, start=40), sources(3, start=42), sources(2, start=45)
    drop(inbox / "cam", first)
    monkeypatch.setattr(edge.loop, "DISK_FULL_RETRY", 0.2)
    with Live(tiny_bundle, options(inbox, out)) as w:
        w.wait_for(lambda: done(out) == 2, "the first two frames")
        filler = fill(out)  # not a byte left
        drop(inbox / "cam", second)
        w.wait_for(lambda: w.stats.status.startswith("paused"), "the watcher to pause")
        assert "no space left" in w.stats.status and "journal" in w.stats.status
        time.sleep(0.5)  # a few tries
        assert sorted(journal_rows(out)) == sorted((sha(p), "done") for p in first)
        assert where(second, inbox, out) == {p.name: (1, 0) for p in second}

        filler.unlink()  # the same watcher journals and sorts them
        w.wait_for(
            lambda: done(out) == 5 and w.stats.status == "watching", "the frames that waited"
        )

        filler = fill(out)
        drop(inbox / "cam", third)
        w.wait_for(lambda: w.stats.status.startswith("paused"), "the watcher to pause again")
        w.stop()  # stopped while paused: the results file cannot be written, it still stops
    assert not w.errors, w.errors
    assert where(third, inbox, out) == {p.name: (1, 0) for p in third}
    assert not temps(out)

    filler.unlink()
    stats = run_once(load_bundle(tiny_bundle), options(inbox, out), Stats(out=out))
    assert sum(stats.decisions.values()) == 2
    assert_each_once(first + second + third, inbox, out)


# -- 2. an SD card: FAT through FUSE --------------------------------------------------------


@pytest.fixture
def card(mounts: Mounts, tmp_path: Path) -> Path:
    """A 32 MB FAT32 card, mounted read-write through FUSE (the kernel may lack vfat)."""
    return mounts.fat(tmp_path / "card.img", tmp_path / "card")


def test_an_sd_card_is_polled_and_each_frame_moved_off_it_once(
    tiny_bundle: Path, tmp_path: Path, card: Path, caplog: pytest.LogCaptureFixture
):
    assert (mount_fstype(card) or "").startswith("fuse")  # fuse.fusefat in /proc/mounts
    assert needs_polling(card)
    out = tmp_path / "out"
    frames = sources(4, start=60) + sources(2, folder=PERU)  # .jpg and .JPG, 36-215 KB
    caplog.set_level(logging.INFO, logger="edge.discover")
    opts = options(card, out, poll_interval=0.5)  # polling picked, not asked for
    with Live(tiny_bundle, opts) as w:
        w.wait_for(lambda: "(polling)" in caplog.text, "the watcher to start")
        drop(card / "DCIM" / "100MEDIA", frames[:5])
        # one frame written slowly, in chunks, as a camera would
        data = frames[5].read_bytes()
        with open(card / "DCIM" / "100MEDIA" / frames[5].name, "wb") as f:
            for i in range(0, len(data), len(data) // 4 + 1):
                f.write(data[i : i + len(data) // 4 + 1])
                f.flush()
                time.sleep(0.15)
        w.wait_for(lambda: done(out) == len(frames), "every frame")
    assert not w.errors
    assert f"watching {card} (polling)" in caplog.text
    assert w.stats.decisions["quarantine"] == 0  # the slow one waited until it was whole
    assert not list(scan(card))  # the card holds no frame any more
    assert_each_once(frames, card, out)
    with Journal.open(out) as j:  # the card's times (2 s steps on FAT) went with the frames
        for r in j.frames():
            assert (out / r.dest).stat().st_mtime == r.mtime


def test_a_batch_copy_over_an_sd_card_leaves_it_untouched(
    tiny_bundle: Path, tmp_path: Path, card: Path
):
    out = tmp_path / "out"
    frames = sources(4, start=80) + sources(1, start=2, folder=PERU)
    drop(card / "DCIM" / "100MEDIA", frames)

    def state() -> dict[str, tuple[str, int, int]]:
        return {
            p.relative_to(card).as_posix(): (sha(p), p.stat().st_size, p.stat().st_mtime_ns)
            for p in card.rglob("*")
            if p.is_file()
        }

    before = state()
    assert all(mtime % 2_000_000_000 == 0 for *_, mtime in before.values())  # FAT: 2 s steps
    args = [
        "watch",
        str(card),
        "--out",
        str(out),
        "--bundle",
        str(tiny_bundle),
        "--once",
        "--copy",
        "--no-tui",
        "--settle",
        "0.1",
    ]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert state() == before
    assert Counter(sha(p) for p in sorted_frames(out)) == Counter(sha(p) for p in frames)

    r = runner.invoke(app, args)  # the card read again: known frames are skipped
    assert r.exit_code == 0, r.output
    assert state() == before
    assert len(sorted_frames(out)) == len(frames)
    assert len(journal_rows(out)) == len(frames)


# -- 3. a move across two filesystems -------------------------------------------------------


def test_a_move_across_filesystems_removes_each_original_only_once_its_copy_is_whole(
    tiny_bundle: Path, tmp_path: Path, mounts: Mounts, monkeypatch: pytest.MonkeyPatch
):
    """Inbox on a tmpfs, OUT on the disk: the rename fails with EXDEV for real, and the sink
    copies, fsyncs, renames and only then unlinks the original. The test watches (without
    changing) the rename and every unlink of an inbox frame."""
    inbox = mounts.tmpfs(tmp_path / "in", "16m")
    out = tmp_path / "out"
    frames = sources(6, start=100) + sources(2, start=4, folder=PERU)
    drop(inbox / "cam", frames)
    mtimes = {p.name: (inbox / "cam" / p.name).stat().st_mtime_ns for p in frames}
    link_errors: list[int | None] = []
    copies_at_unlink: dict[str, int] = {}
    real_link, real_unlink = edge.sink._link, Path.unlink

    def link(src: Path, dst: Path) -> None:
        try:
            real_link(src, dst)
        except OSError as e:
            link_errors.append(e.errno)
            raise

    def unlink(self: Path, missing_ok: bool = False) -> None:
        if inbox in self.parents and self.suffix.lower() in IMAGE_EXTS:
            h = sha(self)
            copies_at_unlink[self.name] = sum(sha(p) == h for p in sorted_frames(out))
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(edge.sink, "_link", link)
    monkeypatch.setattr(Path, "unlink", unlink)
    run_once(load_bundle(tiny_bundle), options(inbox, out), Stats(out=out))
    monkeypatch.undo()

    assert link_errors == [errno.EXDEV] * len(frames)
    assert copies_at_unlink == {p.name: 1 for p in frames}  # a whole copy sat in OUT
    assert_each_once(frames, inbox, out)
    with Journal.open(out) as j:  # times kept to the nanosecond across filesystems
        assert {
            Path(r.relpath).name: (out / r.dest).stat().st_mtime_ns for r in j.frames()
        } == mtimes
