"""Power cuts, for real: the watcher runs on a FUSE filesystem that keeps only what was fsynced.

SIGKILL keeps the page cache, so the kill tests in test_watch.py cannot see a write that was
never made durable. Here inbox and OUT (journal included) lie on `powercut_fs.py`, which on a
cut keeps each file's bytes as of its last fsync and each folder's names as of its last
fsyncdir (the strict POSIX model). The real `edge watch` process is SIGKILLed while frames
land, the power is cut, the filesystem comes back with what survived, and the watcher is
restarted; at the end every frame dropped must lie in exactly one place with its bytes and
be journaled once, done. Inbox and OUT share the filesystem, as on a camera's card or a
single disk: frames then move by rename, and the inbox folder's fsync matters too.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import spawn_watcher

from edge.journal import Journal

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
CA01 = HERE.parents[1].parent / "shared" / "data" / "camtrap" / "mlwic_examples" / "CA-01"
FOLDERS = ("empty", "tagged", "review", "quarantine")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class PowerCutDisk:
    """A powercut_fs mount whose state survives cuts in `image` (on the normal disk)."""

    def __init__(self, image: Path, mnt: Path) -> None:
        self.image, self.mnt = image, mnt
        self.proc: subprocess.Popen | None = None

    def mount(self) -> None:
        self.mnt.mkdir(exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "powercut_fs.py"), str(self.image), str(self.mnt)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 20
        while not os.path.ismount(self.mnt):
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise OSError(f"powercut_fs did not mount: {err.strip()[-500:]}")
            if time.monotonic() > deadline:
                raise OSError("powercut_fs did not mount in 20 s")
            time.sleep(0.05)

    def cut(self) -> None:
        """Unmount: the filesystem keeps only what was durable and saves it to the image."""
        if self.proc is None:
            return
        done = subprocess.run(["fusermount", "-u", str(self.mnt)], capture_output=True, text=True)
        assert done.returncode == 0, f"cannot unmount (files left open?): {done.stderr}"
        try:
            rc = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            subprocess.run(["fusermount", "-uz", str(self.mnt)], check=False)
            self.proc.kill()
            raise
        finally:
            self.proc = None
        assert rc == 0, "powercut_fs failed to save its image"


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[PowerCutDisk]:
    """A mounted powercut_fs, or a skip where FUSE cannot be used here."""
    try:
        import mfusepy  # noqa: F401  (raises OSError where libfuse is missing)
    except (ImportError, OSError) as e:
        pytest.skip(f"mfusepy unavailable: {e}")
    if not os.path.exists("/dev/fuse") or shutil.which("fusermount") is None:
        pytest.skip("no /dev/fuse or fusermount")
    d = PowerCutDisk(tmp_path / "image.pickle", tmp_path / "mnt")
    try:
        d.mount()
    except OSError as e:
        pytest.skip(f"cannot mount FUSE here: {e}")
    try:
        yield d
    finally:
        if d.proc is not None:
            subprocess.run(["fusermount", "-uz", str(d.mnt)], check=False, capture_output=True)
            d.proc.kill()
            d.proc.wait()


def _drop(src: Path, folder: Path) -> None:
    """Land a frame durably, as a camera that fsyncs would: temp, fsync, rename, fsync folder."""
    tmp = folder / f".{src.name}.part"
    with open(src, "rb") as fi, open(tmp, "wb") as fo:
        shutil.copyfileobj(fi, fo)
        fo.flush()
        os.fsync(fo.fileno())
    os.replace(tmp, folder / src.name)
    fsync_dir(folder)


def _where(root: Path) -> dict[str, list[str]]:
    """sha256 -> every place (relative to the mount) a frame lies, inbox or sorted folder."""
    places: dict[str, list[str]] = {}
    for top in ["in", *(f"out/{f}" for f in FOLDERS)]:
        for p in sorted((root / top).rglob("*.jpg")):
            if p.is_file() and not p.name.startswith("."):
                places.setdefault(sha(p), []).append(p.relative_to(root).as_posix())
    return places


def _inbox(root: Path) -> tuple[Path, Path]:
    """in/cam and out on the powercut disk; the inbox made durable, OUT left to the watcher."""
    inbox, out = root / "in", root / "out"
    (inbox / "cam").mkdir(parents=True)
    for d in (inbox / "cam", inbox, root):
        fsync_dir(d)
    return inbox, out


def test_power_cuts_while_frames_arrive_lose_and_duplicate_nothing(
    tiny_bundle: Path, disk: PowerCutDisk
):
    """Kill the watcher and cut the power at random moments; then finish and check."""
    rng = random.Random(7)
    root = disk.mnt
    inbox, out = _inbox(root)
    sources = sorted(CA01.iterdir())[:20]
    pending = list(sources)
    for _ in range(12):
        proc = spawn_watcher(tiny_bundle, inbox, out)
        time.sleep(rng.uniform(0.3, 1.2))  # the watcher starts in about a second
        for _ in range(rng.randint(1, 3)):
            if pending:
                _drop(pending.pop(), inbox / "cam")
            time.sleep(rng.uniform(0.0, 0.15))
        time.sleep(rng.uniform(0.0, 0.5))  # a frame is sorted in about 0.3 s
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        disk.cut()
        disk.mount()
    for p in pending:
        _drop(p, inbox / "cam")
    done = spawn_watcher(tiny_bundle, inbox, out, "--once")
    assert done.wait(300) == 0
    disk.cut()  # what the finished run reported done must have been durable
    disk.mount()

    want = {sha(p): p.name for p in sources}
    places = _where(root)
    lost = sorted(n for s, n in want.items() if s not in places)
    twice = {want.get(s, s): ps for s, ps in places.items() if len(ps) > 1}
    with Journal.open(out) as j:
        rows = j.frames()
    detail = {r.relpath: (r.state, r.dest) for r in rows}
    assert not lost, f"lost after power cuts: {lost}; journal: {detail}"
    assert not twice, f"in two places after power cuts: {twice}"
    assert set(places) == set(want)
    assert sorted(r.sha256 for r in rows) == sorted(want), f"journal rows: {detail}"
    assert {r.state for r in rows} == {"done"}, f"journal: {detail}"
    for r in rows:
        assert places[r.sha256] == [f"out/{r.dest}"], (r.relpath, r.dest, places[r.sha256])
        assert r.dest.split("/")[0] in FOLDERS


def test_a_frame_is_durable_in_out_before_the_inbox_can_forget_it(
    tiny_bundle: Path, disk: PowerCutDisk
):
    """Stop the watcher right after a rename, let the camera fsync the inbox, cut the power."""
    root = disk.mnt
    inbox, out = _inbox(root)
    out.mkdir()  # durable, with its sorted folders, so that only the rename is under test
    for f in FOLDERS:
        (out / f / "cam").mkdir(parents=True)
        fsync_dir(out / f / "cam")
        fsync_dir(out / f)
    fsync_dir(out)
    fsync_dir(root)
    sources = sorted(CA01.iterdir())[:3]
    for p in sources[:2]:
        _drop(p, inbox / "cam")
    env = {**os.environ, "EDGE_CRASH_AT": "after_place"}  # exits after the first rename
    cmd = [
        sys.executable,
        "-m",
        "edge.cli",
        "watch",
        str(inbox),
        "--out",
        str(out),
        "--bundle",
        str(tiny_bundle),
        "--no-tui",
        "--settle",
        "0.1",
        "--once",
    ]
    assert subprocess.run(cmd, env=env, capture_output=True).returncode == 77
    _drop(sources[2], inbox / "cam")  # fsyncs in/cam, as any camera writing there does
    disk.cut()
    disk.mount()
    assert spawn_watcher(tiny_bundle, inbox, out, "--once").wait(300) == 0

    places = _where(root)
    lost = sorted(p.name for p in sources if sha(p) not in places)
    with Journal.open(out) as j:
        detail = {r.relpath: (r.state, r.dest) for r in j.frames()}
    assert not lost, f"lost after a power cut: {lost}; journal: {detail}"
    assert {state for state, _ in detail.values()} == {"done"}, detail
