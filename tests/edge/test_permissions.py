"""Permission denied, for real: the real `edge watch` run by a user the permissions apply to.

The tests run as root, where modes are not enforced, so the watcher runs as uid 65534
(nobody) when that user can run this Python, else as root with every capability dropped
(setpriv), which the same modes stop. Either way nothing is simulated: the kernel refuses
the reads and writes. Frames and folders the watcher may not touch are owned by root.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import pytest

from edge.journal import Journal
from edge.sink import admit

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
CA01 = DATA / "camtrap" / "mlwic_examples" / "CA-01"
NOBODY = 65534
SORTED = ("empty", "tagged", "review", "quarantine")
TIMEOUT = 60  # seconds for one run: a hang fails the test instead of blocking the suite

if os.geteuid() != 0:
    pytest.skip(
        "needs root to run the watcher as another user and to own what it may not touch",
        allow_module_level=True,
    )


@dataclass
class Watcher:
    """How to start a process that file permissions apply to, and which uid it runs as."""

    name: str
    uid: int
    prefix: list[str] = field(default_factory=list)
    popen: dict[str, object] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)

    def run(self, args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.prefix, *args],
            cwd=cwd,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            **self.popen,
        )  # type: ignore[arg-type]

    def give(self, *paths: Path) -> None:
        """Make `paths` (and all below them) the watcher's own."""
        for top in paths:
            for folder, _dirs, files in os.walk(top):
                os.chown(folder, self.uid, self.uid)
                for f in files:
                    os.chown(Path(folder, f), self.uid, self.uid)


@pytest.fixture(scope="module")
def work() -> Iterator[Path]:
    """A folder under /tmp every user may enter (pytest's tmp_path is root's, mode 0700)."""
    path = Path(tempfile.mkdtemp(prefix="edge-perm-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.fixture(scope="module")
def watcher(work: Path) -> Watcher:
    """nobody when it can import edge, else root without capabilities; skip if neither."""
    if not CA01.is_dir():
        pytest.skip(f"reference data missing: {CA01}")
    probe = work / "probe"
    probe.write_bytes(b"x")
    probe.chmod(0)
    env = {**os.environ, "HOME": str(work), "PYTHONDONTWRITEBYTECODE": "1", "COLUMNS": "250"}
    env.pop("EDGE_CRASH_AT", None)
    candidates = [
        Watcher(
            f"uid {NOBODY}",
            NOBODY,
            popen={"user": NOBODY, "group": NOBODY, "extra_groups": []},
            env=env,
        )
    ]
    if setpriv := shutil.which("setpriv"):
        candidates.append(
            Watcher(
                "root without capabilities",
                0,
                env=env,
                prefix=[setpriv, "--bounding-set", "-all", "--inh-caps", "-all"],
            )
        )
    tried = []
    for w in candidates:
        try:
            r = w.run(
                [sys.executable, "-c", "import edge, sys; open(sys.argv[1], 'rb')", str(probe)],
                cwd=work,
            )
        except OSError as e:  # this Python lies in a folder the user may not enter
            tried.append(f"{w.name}: {e}")
            continue
        if r.returncode != 0 and "PermissionError" in r.stderr:
            return w  # it runs edge, and a mode-000 file of root's is refused
        tried.append(f"{w.name}: {r.stderr.strip().splitlines()[-1:] or 'permissions ignored'}")
    pytest.skip("no user here both runs edge and is refused by file modes: " + "; ".join(tried))


@pytest.fixture(scope="module")
def bundle(tiny_bundle: Path, work: Path) -> Path:
    """The test bundle where the watcher may read it."""
    path = shutil.copytree(tiny_bundle, work / "bundle")
    for folder, _dirs, files in os.walk(path):
        os.chmod(folder, 0o755)
        for f in files:
            os.chmod(Path(folder, f), 0o644)
    return path


def flat(text: str) -> str:
    """Rich wraps to the terminal's width; compare words, not line breaks."""
    return " ".join(text.split())


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def drop(folder: Path, first: int, n: int) -> list[Path]:
    """Copy n real frames (from the first-th on) into folder."""
    folder.mkdir(parents=True, exist_ok=True)
    return [
        Path(shutil.copy(p, folder / p.name)) for p in sorted(CA01.iterdir())[first : first + n]
    ]


def lock(path: Path) -> None:
    """Root's, mode 000: the watcher may neither read it nor (a folder) list it."""
    os.chown(path, 0, 0)
    path.chmod(0)


def sorted_shas(out: Path) -> list[str]:
    """The sha256 of every frame in OUT's sorted folders, duplicates kept."""
    return sorted(
        sha(p)
        for d in SORTED
        if (out / d).is_dir()
        for p in (out / d).rglob("*.jpg")
        if p.is_file()
    )


def watch(
    w: Watcher, case: Path, bundle: Path, *extra: str, **env: str
) -> subprocess.CompletedProcess[str]:
    return w.run(
        [
            sys.executable,
            "-m",
            "edge.cli",
            "watch",
            str(case / "in"),
            "--out",
            str(case / "out"),
            "--bundle",
            str(bundle),
            "--once",
            "--no-tui",
            "--settle",
            "0.1",
            *extra,
        ],
        cwd=case,
        **env,
    )


def journal_rows(out: Path) -> dict[str, str]:
    """relpath -> state; asserts that no frame has two rows."""
    with Journal.open(out) as j:
        rows = j.frames()
    relpaths = [r.relpath for r in rows]
    assert len(relpaths) == len(set(relpaths)), relpaths
    return {r.relpath: r.state for r in rows}


def test_an_unreadable_frame_stays_in_the_inbox_and_is_taken_once_readable(
    watcher: Watcher, bundle: Path, work: Path
):
    case = work / "unreadable"
    good = drop(case / "in" / "cam", 0, 3)
    (locked,) = drop(case / "in" / "cam", 3, 1)
    watcher.give(case)
    lock(locked)
    before, st = sha(locked), locked.stat()

    r = watch(watcher, case, bundle)
    assert r.returncode == 3, r.stderr  # done, but not with everything
    assert "Traceback" not in r.stderr
    assert f"cannot read {locked}: Permission denied" in r.stderr  # says which, and why
    assert "1 frame(s) could not be read and were left in the inbox (cam/" in flat(r.stdout)
    out = case / "out"
    assert sorted_shas(out) == sorted(sha(CA01 / p.name) for p in good)  # each good one, once
    assert not [p for p in good if p.exists()]  # moved out of the inbox
    # the unreadable frame is where it was, untouched, and not journaled
    after = locked.stat()
    assert (after.st_ino, after.st_mode, after.st_ctime_ns) == (
        st.st_ino,
        st.st_mode,
        st.st_ctime_ns,
    )
    assert sha(locked) == before
    assert journal_rows(out) == {f"cam/{p.name}": "done" for p in good}

    watcher.give(locked)  # the user fixes its owner: the next run takes it
    locked.chmod(0o644)
    r = watch(watcher, case, bundle)
    assert r.returncode == 0 and "cannot read" not in r.stderr, r.stderr
    assert not locked.exists() and before in sorted_shas(out)
    assert len(sorted_shas(out)) == 4
    assert journal_rows(out) == {f"cam/{p.name}": "done" for p in [*good, locked]}


def test_a_live_watcher_logs_a_locked_frame_once_not_at_each_rescan(
    watcher: Watcher, bundle: Path, work: Path
):
    """Each rescan hands the locked frame to the gate again and the gate gives up on it
    again; the log says so once, not every few minutes for weeks."""
    case = work / "relog"
    good = drop(case / "in" / "cam", 0, 2)
    (locked,) = drop(case / "in" / "cam", 2, 1)
    config = case / "edge.toml"
    config.write_text(
        "[watch]\nrescan_interval = 0.2\ngive_up_seconds = 0.1\n"
        "settle_seconds = 0.1\npoll = true\npoll_interval = 0.1\n"
    )
    watcher.give(case)
    lock(locked)
    proc = subprocess.Popen(
        [
            *watcher.prefix,
            sys.executable,
            "-m",
            "edge.cli",
            "watch",
            str(case / "in"),
            "--out",
            str(case / "out"),
            "--bundle",
            str(bundle),
            "--config",
            str(config),
            "--no-tui",
        ],
        cwd=case,
        env=watcher.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **watcher.popen,
    )  # type: ignore[arg-type]
    try:
        deadline = time.monotonic() + TIMEOUT
        while any(p.exists() for p in good) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(3)  # fifteen rescans, each finding the locked frame again
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=TIMEOUT)
    assert not any(p.exists() for p in good), stderr
    assert "Traceback" not in stderr, stderr
    assert stderr.count(f"cannot read {locked}: Permission denied") == 1, stderr
    assert sha(locked) == sha(CA01 / locked.name)


GATE = """
import sys
from pathlib import Path
from edge.stability import StabilityGate
gate = StabilityGate(settle=0, give_up=0, decode=False)
for arg in sys.argv[1:]:
    gate.add(Path(arg))
for v in sorted(gate.poll(), key=lambda v: v.path):
    print(v.path.name, v.status, v.reason, sep="|")
"""


def test_the_gate_says_permission_denied_not_truncated_or_whole(watcher: Watcher, work: Path):
    """Without decoding the gate reads a JPEG's ends and a PNG not at all: an unreadable
    JPEG looked truncated, an unreadable PNG whole (and then crashed the journal's hashing)."""
    case = work / "gate"
    (jpg,) = drop(case, 0, 1)
    png = case / "frame.png"
    png.write_bytes(cv2.imencode(".png", cv2.imread(str(jpg)))[1].tobytes())
    for p in (jpg, png):
        lock(p)
    r = watcher.run([sys.executable, "-c", GATE, str(jpg), str(png)], cwd=work)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        f"{jpg.name}|unreadable|cannot read: Permission denied after 0 s",
        "frame.png|unreadable|cannot read: Permission denied after 0 s",
    ]


def test_a_frame_unreadable_after_its_decision_waits_without_pausing_the_others(
    watcher: Watcher, bundle: Path, work: Path
):
    """Decided (journaled), then the watcher stops; the frame's mode changes before the
    restart: it is not a full disk (no pause, no retry loop), the others are placed."""
    case = work / "decided"
    frames = drop(case / "in" / "cam", 0, 3)
    watcher.give(case)
    r = watch(watcher, case, bundle, EDGE_CRASH_AT="after_decision")
    assert r.returncode == 77, r.stderr  # stopped after the intents, before any move
    assert set(journal_rows(case / "out").values()) == {"decided"}
    locked, others = frames[0], frames[1:]
    lock(locked)
    before = sha(locked)

    r = watch(watcher, case, bundle)
    assert r.returncode == 3, r.stderr
    assert "Traceback" not in r.stderr and "paused" not in r.stderr
    assert f"cannot read {locked}: Permission denied; left in the inbox" in r.stderr
    assert sorted_shas(case / "out") == sorted(sha(CA01 / p.name) for p in others)
    assert sha(locked) == before
    assert journal_rows(case / "out") == {
        f"cam/{p.name}": "decided" if p == locked else "done" for p in frames
    }

    watcher.give(locked)
    locked.chmod(0o644)
    r = watch(watcher, case, bundle)
    assert r.returncode == 0 and "cannot read" not in r.stderr, r.stderr
    assert sorted_shas(case / "out") == sorted(sha(CA01 / p.name) for p in frames)
    assert journal_rows(case / "out") == {f"cam/{p.name}": "done" for p in frames}


def test_a_frame_unreadable_after_it_was_journaled_is_not_quarantined(
    watcher: Watcher, bundle: Path, work: Path
):
    """Journaled as seen (a restart finds it pending), then its mode changes: the decoder
    may not read it, which says nothing about the frame. It stays pending in the inbox, the
    run says so (exit 3), and once readable it is sorted like any frame, not quarantined."""
    case = work / "seen"
    frames = drop(case / "in" / "cam", 0, 3)
    (case / "out").mkdir()
    with Journal.open(case / "out") as j:
        for p in frames:
            admit(j, case / "in", case / "out", p)
    watcher.give(case)
    locked = frames[1]
    lock(locked)

    r = watch(watcher, case, bundle)
    assert r.returncode == 3, r.stderr
    assert "Traceback" not in r.stderr
    assert f"{locked}: cannot read: Permission denied; left in the inbox" in r.stderr
    rows = journal_rows(case / "out")
    assert rows[f"cam/{locked.name}"] == "seen"
    assert [s for rel, s in rows.items() if rel != f"cam/{locked.name}"] == ["done", "done"]
    assert not (case / "out" / "quarantine").exists()

    watcher.give(locked)
    locked.chmod(0o644)
    r = watch(watcher, case, bundle)
    assert r.returncode == 0, r.stderr
    assert journal_rows(case / "out") == {f"cam/{p.name}": "done" for p in frames}
    assert sorted_shas(case / "out") == sorted(sha(CA01 / p.name) for p in frames)
    assert not (case / "out" / "quarantine").exists()


def test_a_camera_folder_that_cannot_be_listed_is_named_and_the_others_sorted(
    watcher: Watcher, bundle: Path, work: Path
):
    case = work / "folder"
    open_cam = drop(case / "in" / "camA", 0, 3)
    hidden = drop(case / "in" / "camB", 3, 2)
    watcher.give(case)
    lock(case / "in" / "camB")

    r = watch(watcher, case, bundle)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert f"cannot read folder {case / 'in' / 'camB'}: Permission denied" in r.stderr
    assert sorted_shas(case / "out") == sorted(sha(CA01 / p.name) for p in open_cam)
    assert journal_rows(case / "out") == {f"camA/{p.name}": "done" for p in open_cam}
    assert all(p.exists() and sha(p) == sha(CA01 / p.name) for p in hidden)


@pytest.mark.parametrize("locked", ["", "review/cam"], ids=["out", "out-subfolder"])
def test_an_output_folder_that_cannot_be_written_is_a_clear_error(
    watcher: Watcher, bundle: Path, work: Path, locked: str
):
    """OUT itself, or a folder frames go to (the tiny bundle sends every frame to review)."""
    case = work / f"readonly-{locked.replace('/', '-') or 'out'}"
    frames = drop(case / "in" / "cam", 0, 3)
    (case / "out" / locked).mkdir(parents=True)
    watcher.give(case)
    denied = case / "out" / locked
    os.chown(denied, 0, 0)
    denied.chmod(0o555)

    r = watch(watcher, case, bundle)  # before the check: a traceback, or paused for ever
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert f"permission denied: cannot write {denied.resolve()}" in " ".join(r.stderr.split())
    assert all(p.exists() and sha(p) == sha(CA01 / p.name) for p in frames)  # nothing moved
    assert not (case / "out" / "journal.sqlite").exists()
    assert sorted_shas(case / "out") == []


def test_copy_mode_leaves_an_unreadable_original_untouched(
    watcher: Watcher, bundle: Path, work: Path
):
    case = work / "copy"
    good = drop(case / "in" / "cam", 0, 3)
    (locked,) = drop(case / "in" / "cam", 3, 1)
    watcher.give(case)
    lock(locked)
    originals = {p: (p.stat(), sha(p)) for p in [*good, locked]}

    r = watch(watcher, case, bundle, "--copy")
    assert r.returncode == 3, r.stderr
    assert "Traceback" not in r.stderr
    assert f"cannot read {locked}: Permission denied" in r.stderr
    for p, (st, digest) in originals.items():  # every original, the unreadable one too
        now = p.stat()
        assert (now.st_ino, now.st_mode, now.st_mtime_ns, now.st_ctime_ns) == (
            st.st_ino,
            st.st_mode,
            st.st_mtime_ns,
            st.st_ctime_ns,
        )
        assert sha(p) == digest
    out = case / "out"
    assert sorted_shas(out) == sorted(sha(p) for p in good)  # copied once, nothing quarantined
    assert journal_rows(out) == {f"cam/{p.name}": "done" for p in good}


def test_once_stops_and_says_so_when_the_inbox_may_not_be_emptied(
    watcher: Watcher, bundle: Path, work: Path
):
    """Move mode with a camera folder the watcher may read but not change: a live watcher
    pauses and retries; a batch run says what is wrong and stops, and a rerun after the fix
    finishes the job, each frame once."""
    case = work / "readonly-inbox"
    frames = drop(case / "in" / "cam", 0, 3)
    watcher.give(case)
    cam = case / "in" / "cam"
    os.chown(cam, 0, 0)
    cam.chmod(0o555)

    r = watch(watcher, case, bundle)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert "stopped:" in r.stdout and "Nothing is lost" in flat(r.stdout)
    assert all(p.exists() and sha(p) == sha(CA01 / p.name) for p in frames)

    watcher.give(cam)
    cam.chmod(0o755)
    r = watch(watcher, case, bundle)
    assert r.returncode == 0, r.stderr
    assert sorted_shas(case / "out") == sorted(sha(CA01 / p.name) for p in frames)
    assert journal_rows(case / "out") == {f"cam/{p.name}": "done" for p in frames}
