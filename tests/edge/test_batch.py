"""`edge batch` on Ray: real frames, real bad files, a real Ray (local, or a two-node cluster
started here on 127.0.0.1), a worker and a driver killed mid-run, then resumed."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

from edge.batch.listing import Listed, capture_order, list_frames, make_chunks
from edge.batch.merge import merge
from edge.batch.shards import is_complete, read_shard, write_shard
from edge.batch.worker import ChunkOptions, ChunkScorer, decode_many

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
CA01 = DATA / "camtrap" / "mlwic_examples" / "CA-01"
PERU = DATA / "camtrap" / "peru_s90_animl" / "S90_SDZG1"
THRESHOLDS = {"tag": 0.6, "empty": 0.8, "empty_foreground": 0.02}
BIN = Path(sys.executable).parent
LOOPBACK = Path(__file__).resolve().parent / "ray_loopback"  # its sitecustomize, for clusters
# Ray reaches for the network by itself (its dashboard asks the cloud metadata address what
# machine it runs on; its nodes swap 127.0.0.1 for the machine's own address), and these tests
# may use nothing but the loopback. So every test that starts Ray runs inside a network
# namespace of its own that has only `lo`: nothing can leave it. They are marked `netns` and
# run there by the two tests at the end of this file.
IN_NETNS = os.environ.get("OVERMAP_NETNS") == "1"
_OUTSIDE = pytest.mark.skipif(
    not IN_NETNS,
    reason="starts Ray: run in a loopback-only network namespace by "
    "test_ray_tests_pass_in_a_loopback_only_network_namespace",
)


def NETNS(test):  # noqa: N802 (a marker, named as one)
    return pytest.mark.netns(_OUTSIDE(test))


BAD = {"S90/text.jpg": "not a decodable image", "S90/cut.jpg": "truncated JPEG"}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fill_inbox(inbox: Path, n_ca: int = 6, n_peru: int = 3) -> list[str]:
    """Real frames of two cameras and two bad files (text named .jpg, a cut JPEG)."""
    if not CA01.is_dir() or not PERU.is_dir():
        pytest.skip(f"reference data missing: {CA01.parent}")
    (inbox / "CA01").mkdir(parents=True)
    (inbox / "S90").mkdir()
    for p in sorted(CA01.iterdir())[:n_ca]:
        shutil.copy2(p, inbox / "CA01" / p.name)
    for p in sorted(PERU.iterdir())[:n_peru]:
        shutil.copy2(p, inbox / "S90" / p.name)
    (inbox / "S90" / "text.jpg").write_bytes(b"this is not a picture\n")
    (inbox / "S90" / "cut.jpg").write_bytes((PERU / "EK000001.JPG").read_bytes()[:5000])
    return sorted(p.relative_to(inbox).as_posix() for p in inbox.rglob("*") if p.is_file())


def images_of(out: Path) -> list[dict]:
    return json.loads((out / "results" / "megadetector.json").read_text())["images"]


def assert_each_once(out: Path, names: list[str]) -> list[dict]:
    images = images_of(out)
    counts = Counter(im["file"] for im in images)
    assert sorted(counts) == names and set(counts.values()) == {1}, counts
    for im in images:
        if im["file"] in BAD:
            assert BAD[im["file"]] in im["failure"] and im["detections"] is None
        else:
            assert "failure" not in im and im["decision"] in ("empty", "tagged", "review")
    return images


# -- listing, chunks, shards: no Ray


def test_chunks_hold_one_camera_in_capture_order_and_their_ids_are_stable(tmp_path: Path):
    names = fill_inbox(tmp_path / "in")
    root, listed = list_frames(tmp_path / "in")
    assert [f.relpath for f in listed] == names
    # a list file of the same frames, relative and absolute, gives the same listing
    (tmp_path / "in" / "frames.txt").write_text(
        "# frames\n" + "\n".join(n if i % 2 else str(root / n) for i, n in enumerate(names))
    )
    root2, listed2 = list_frames(tmp_path / "in" / "frames.txt")
    assert (root2, [f.key for f in listed2]) == (root, [f.key for f in listed])

    timed = [
        Listed(f.relpath, f.size, f.mtime_ns, f"2020-01-01T00:00:{59 - i:02d}", "exif")
        for i, f in enumerate(listed)
    ]
    ordered = capture_order(timed)
    chunks = make_chunks(ordered, size=2, warmup=1, signature="a")
    for c in chunks:
        assert {f.camera for f in (*c.frames, *c.warmup)} == {c.camera}
        times = [f.time for f in (*c.warmup, *c.frames)]
        assert times == sorted(times)  # later name, earlier time: time wins
    assert [f for c in chunks for f in c.frames] == ordered  # every frame in exactly one chunk
    assert [c.id for c in make_chunks(ordered, size=2, warmup=1, signature="a")] == [
        c.id for c in chunks
    ]
    assert not {c.id for c in make_chunks(ordered, size=2, warmup=1, signature="b")} & {
        c.id for c in chunks
    }  # other settings: no shard of these is reused


def test_a_torn_or_short_shard_is_not_complete(tmp_path: Path):
    line = {"size": 1, "mtime_ns": 2, "record": {"relpath": "a.jpg"}}
    path = write_shard(tmp_path, "c1", [line, line])
    assert is_complete(tmp_path, "c1") and len(read_shard(path) or []) == 2
    path.write_text(path.read_text().splitlines()[0] + "\n" + json.dumps(line) + "\n")
    assert not is_complete(tmp_path, "c1")  # the header says 2
    path.write_text(path.read_text()[:-10])
    assert not is_complete(tmp_path, "c1") and not is_complete(tmp_path, "other")
    assert not list(tmp_path.glob(".*.tmp"))


def test_unreadable_frames_are_failures_with_their_reason(tmp_path: Path):
    names = fill_inbox(tmp_path)
    (tmp_path / "S90" / "zero.jpg").write_bytes(b"")
    got = dict(
        zip(
            [*names, "S90/zero.jpg", "S90/gone.jpg"],
            decode_many(str(tmp_path), [*names, "S90/zero.jpg", "S90/gone.jpg"], 256),
            strict=True,
        )
    )
    for name, (image, width, height, digest, failure) in got.items():
        if name in BAD or name in ("S90/zero.jpg", "S90/gone.jpg"):
            assert image is None and failure
        else:
            assert failure is None and image.ndim == 3
            assert width >= image.shape[1] and height >= image.shape[0]
            assert digest == sha(tmp_path / name)
    assert "empty file" in got["S90/zero.jpg"][4] and "No such file" in got["S90/gone.jpg"][4]


def test_a_chunk_is_decided_as_edge_watch_decides_it(tiny_bundle: Path, tmp_path: Path):
    """One camera, 24 frames (the background model is ready after 10): the same labels,
    scores and decisions as `edge watch --once`, frame by frame."""
    from edge.bundle import load_bundle
    from edge.journal import Journal
    from edge.reports import records
    from edge.tui import Stats
    from edge.watch import WatchOptions, run_once

    inbox = tmp_path / "in"
    (inbox / "CA01").mkdir(parents=True)
    for p in sorted(CA01.iterdir())[:24]:
        shutil.copy2(p, inbox / "CA01" / p.name)
    out = tmp_path / "watch"
    run_once(
        load_bundle(tiny_bundle),
        WatchOptions(
            inbox=inbox, out=out, thresholds=THRESHOLDS, copy=True, settle=0.1, give_up=2.0, batch=4
        ),
        Stats(out=out),
    )
    with Journal(out / "journal.sqlite", create=False) as j:
        watched = {r.relpath: r for r in records(j)}

    root, listed = list_frames(inbox)
    from edge.batch.listing import capture_times

    timed = [
        Listed(f.relpath, f.size, f.mtime_ns, t, s)
        for f, (t, s) in zip(
            listed, capture_times(str(root), [f.relpath for f in listed]), strict=True
        )
    ]
    (chunk,) = make_chunks(capture_order(timed), size=100, warmup=0, signature="x")
    scorer = ChunkScorer(
        ChunkOptions(
            bundle=str(tiny_bundle),
            root=str(root),
            shard_dir=str(tmp_path / "shards"),
            thresholds=THRESHOLDS,
            batch=4,
        )
    )
    write_shard(tmp_path / "shards", chunk.id, scorer.run_chunk(chunk))
    batched, missing = merge(tmp_path / "shards", [chunk])
    assert not missing and [r.relpath for r in batched] == [f.relpath for f in chunk.frames]
    assert len(batched) == len(watched) == 24
    for r in batched:
        w = watched[r.relpath]
        assert (r.label, r.decision, r.width, r.height, r.timestamp) == (
            w.label,
            w.decision,
            w.width,
            w.height,
            w.timestamp,
        ), r.relpath
        assert r.softmax == pytest.approx(w.softmax, abs=1e-4)
        assert r.overmap == pytest.approx(w.overmap, abs=1e-4)
        assert r.confidence == pytest.approx(w.confidence, abs=1e-4)


def test_the_command_line_does_not_import_ray():
    code = "import sys, edge.cli; sys.exit('ray' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# -- a local Ray (embedded), a few frames


@pytest.fixture(scope="module")
def local_ray():
    """One embedded Ray for this module's local tests (starting one takes seconds)."""
    ray = pytest.importorskip("ray")
    from edge.batch.pipeline import loopback_only

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # Ray reports nothing home
    loopback_only()  # as `edge batch` without --address: nothing but 127.0.0.1
    ray.init(
        address="local",
        num_cpus=2,
        object_store_memory=200 * 2**20,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    yield ray
    ray.shutdown()


@NETNS
def test_local_ray_batch_with_bad_files_then_a_rerun_that_skips_every_shard(
    local_ray, tiny_bundle: Path, tmp_path: Path
):
    from edge.batch.pipeline import BatchOptions, run_batch

    inbox, out = tmp_path / "in", tmp_path / "out"
    names = fill_inbox(inbox)
    before = {n: sha(inbox / n) for n in names}
    opts = BatchOptions(
        source=inbox,
        out=out,
        bundle=tiny_bundle,
        thresholds=THRESHOLDS,
        chunk_frames=3,
        warmup=2,
        place="hard",
    )
    first = run_batch(opts)
    assert (first.frames, first.failures, first.chunks_done_before) == (11, 2, 0)
    assert first.providers == {"CPUExecutionProvider"} and not first.missing
    images = assert_each_once(out, names)
    shards = sorted((out / "batch" / "shards").glob("*.jsonl"))
    assert len(shards) == first.chunks == 4  # per camera: 6 frames in 3 + 3, 5 in 3 + 2
    written = {p: p.stat().st_mtime_ns for p in shards}
    times = json.loads((out / "batch" / "times.json").read_text())  # what a rerun reuses
    assert sorted(row[0] for row in times) == names

    second = run_batch(opts)  # nothing left to do: every shard is complete
    assert second.chunks_done_before == second.chunks and second.frames == 11
    assert {p: p.stat().st_mtime_ns for p in shards} == written  # not one written again
    assert [im["file"] for im in images_of(out)] == [im["file"] for im in images]
    assert {n: sha(inbox / n) for n in names} == before  # the originals, untouched
    for im in images:  # a hard link per frame under OUT/<decision>/
        decision = im.get("decision", "quarantine")
        assert (out / decision / im["file"]).stat().st_ino == (inbox / im["file"]).stat().st_ino


@NETNS
def test_the_command_writes_a_sorted_copy_and_a_camtrap_dp_package(
    local_ray, tiny_bundle: Path, tmp_path: Path
):
    import csv

    from typer.testing import CliRunner

    from edge.cli import app

    inbox, out = tmp_path / "in", tmp_path / "out"
    names = fill_inbox(inbox)
    config = Path(__file__).resolve().parents[2] / "examples" / "edge.toml"
    result = CliRunner().invoke(
        app,
        [
            "batch",
            str(inbox),
            "--out",
            str(out),
            "--bundle",
            str(tiny_bundle),
            "--sorted-copy",
            "--camtrap-dp",
            str(config),
            "--chunk",
            "4",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "11 frames (2 unreadable)" in result.output
    images = assert_each_once(out, names)
    sorted_view = json.loads((out / "results" / "megadetector-sorted.json").read_text())
    for im, placed in zip(images, sorted_view["images"], strict=True):
        copy = out / placed["file"]
        assert placed["file"].endswith(im["file"]) and sha(copy) == sha(inbox / im["file"])
        assert copy.stat().st_ino != (inbox / im["file"]).stat().st_ino  # a copy, not a link
    with open(out / "camtrap-dp" / "media.csv", newline="") as f:
        media = list(csv.DictReader(f))
    assert media and len(media) <= len(names) - len(BAD)
    assert all((out / m["filePath"]).is_file() for m in media)
    assert all(not m["filePath"].startswith("quarantine/") for m in media)


@NETNS
def test_hard_links_across_filesystems_stop_with_a_message_and_symlinks_then_resume(
    local_ray, tiny_bundle: Path, tmp_path: Path
):
    from typer.testing import CliRunner

    from edge.cli import app

    if not Path("/dev/shm").is_dir() or os.stat("/dev/shm").st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on another filesystem than the temp folder")
    inbox = tmp_path / "in"
    names = fill_inbox(inbox)
    out = Path(tempfile.mkdtemp(prefix="batch-", dir="/dev/shm"))
    try:
        args = ["batch", str(inbox), "--out", str(out), "--bundle", str(tiny_bundle)]
        hard = CliRunner().invoke(app, [*args, "--links", "hard"])
        assert hard.exit_code == 1 and "run again once this is fixed" in hard.output
        assert not (out / "results").exists()  # no results file naming links that are not
        sym = CliRunner().invoke(app, [*args, "--links", "sym"])
        assert sym.exit_code == 0, sym.output
        assert "chunks, 2 done before this run" in sym.output  # the shards of the first try
        for im in assert_each_once(out, names):
            link = out / im.get("decision", "quarantine") / im["file"]
            assert link.is_symlink() and link.resolve() == (inbox / im["file"]).resolve()
    finally:
        shutil.rmtree(out, ignore_errors=True)


# -- a real two-node cluster on 127.0.0.1, workers and drivers killed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cluster_pids(temp_dir: str) -> list[int]:
    """The processes of the cluster whose files are under `temp_dir` (every node's raylet,
    the GCS, the monitors carry it in their command line), and their children."""
    own, parents = set(), {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().decode(errors="replace")
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        parents[int(d.name)] = ppid
        if temp_dir in cmd:
            own.add(int(d.name))
    return sorted(own | {pid for pid, ppid in parents.items() if ppid in own})


def stop_cluster(temp_dir: str) -> None:
    """Stop this test's cluster and only it: `ray stop` would stop every Ray on the machine,
    other runs' included."""
    pids = cluster_pids(temp_dir)  # before any dies: its children are then still known

    def alive() -> list[int]:
        return [
            pid
            for pid in pids
            if Path(f"/proc/{pid}").exists()
            and "zombie" not in Path(f"/proc/{pid}/status").read_text(errors="replace")
        ]

    for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 10.0)):
        for pid in alive():
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, FileNotFoundError):
                pass
        deadline = time.monotonic() + wait
        while alive() and time.monotonic() < deadline:
            time.sleep(0.2)
    shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture
def cluster():
    """A head and a worker node on this machine, one CPU each, in a temp dir of their own."""
    pytest.importorskip("ray")
    # token auth, as Ray clusters have by default, explicit so the worker node joins with it
    env = {
        **os.environ,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "token",
        # every process of the cluster (and the driver) on 127.0.0.1: Ray would otherwise
        # swap the loopback address for the machine's own (see ray_loopback/)
        "PYTHONPATH": os.pathsep.join(filter(None, [str(LOOPBACK), os.environ.get("PYTHONPATH")])),
        "OVERMAP_RAY_LOOPBACK": "1",
    }
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)  # a cluster of two nodes, not embedded
    port = free_port()
    address = f"127.0.0.1:{port}"
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: socket paths have a limit
    common = [
        "--num-cpus",
        "1",
        "--object-store-memory",
        str(200 * 2**20),
        "--disable-usage-stats",
        "--temp-dir",
        temp_dir,
    ]
    ray = str(BIN / "ray")
    try:
        subprocess.run(
            [
                ray,
                "start",
                "--head",
                "--port",
                str(port),
                "--node-ip-address",
                "127.0.0.1",
                "--include-dashboard",
                "false",
                *common,
            ],
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        subprocess.run(
            [ray, "start", "--address", address, *common],
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        yield address, env, temp_dir
    finally:
        stop_cluster(temp_dir)


def batch_process(
    address: str, env: dict, inbox: Path, out: Path, bundle: Path, *extra: str
) -> subprocess.Popen:
    cmd = [
        str(BIN / "edge"),
        "batch",
        str(inbox),
        "--out",
        str(out),
        "--address",
        address,
        "--workers",
        "2",
        "--bundle",
        str(bundle),
        "--chunk",
        "2",
        *extra,
    ]
    return subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def wait_for_shards(out: Path, n: int, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while len(list((out / "batch" / "shards").glob("*.jsonl"))) < n:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        assert time.monotonic() < deadline, "no shard written in time"
        time.sleep(0.1)


def chunk_workers(temp_dir: str) -> list[int]:
    """The pids of the chunk actors of this test's cluster (Ray names their processes after
    the class; they are children of its raylets)."""
    pids = []
    ours = set(cluster_pids(temp_dir))
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) in ours:
            try:
                cmd = (d / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "MapWorker(MapBatches(ChunkWorker))" in cmd:
                pids.append(int(d.name))
    return pids


@pytest.mark.slow
@NETNS
def test_cluster_run_with_a_worker_killed_then_resumed_has_every_frame_once(
    cluster, tiny_bundle: Path, tmp_path: Path
):
    address, env, temp_dir = cluster
    inbox, out = tmp_path / "in", tmp_path / "out"
    names = fill_inbox(inbox, n_ca=10, n_peru=6)
    proc = batch_process(address, env, inbox, out, tiny_bundle)
    wait_for_shards(out, 1, proc)
    victims = chunk_workers(temp_dir)
    assert victims, "no chunk actor found to kill"
    os.kill(victims[0], signal.SIGKILL)
    output, _ = proc.communicate(timeout=300)  # Ray may restart the actor and finish, or not
    shards_before = {p.name for p in (out / "batch" / "shards").glob("*.jsonl")}
    rerun = batch_process(address, env, inbox, out, tiny_bundle)
    output2, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, output + output2
    done_before = re.search(r"chunks, (\d+) done before this run", output2)
    assert done_before and int(done_before.group(1)) >= 1, output2  # the first run's shards
    assert_each_once(out, names)
    assert shards_before <= {p.name for p in (out / "batch" / "shards").glob("*.jsonl")}


@pytest.mark.slow
@NETNS
def test_cluster_driver_killed_mid_run_loses_and_duplicates_nothing(
    cluster, tiny_bundle: Path, tmp_path: Path
):
    address, env, _temp_dir = cluster
    inbox, out = tmp_path / "in", tmp_path / "out"
    names = fill_inbox(inbox, n_ca=10, n_peru=6)
    proc = batch_process(address, env, inbox, out, tiny_bundle, "--sorted-copy")
    wait_for_shards(out, 2, proc)
    proc.kill()
    proc.wait()
    done = {p: p.stat().st_mtime_ns for p in (out / "batch" / "shards").glob("*.jsonl")}
    assert all(is_complete(p.parent, p.stem) for p in done)
    rerun = batch_process(address, env, inbox, out, tiny_bundle, "--sorted-copy")
    output, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, output
    images = assert_each_once(out, names)
    sorted_files = [
        p
        for p in out.rglob("*")
        if p.is_file()
        and p.relative_to(out).parts[0] in ("empty", "tagged", "review", "quarantine")
    ]
    assert len(sorted_files) == len(images)  # one copy each, the killed run's included
    assert {p: p.stat().st_mtime_ns for p in done} == done  # what it finished, not redone


def _in_a_loopback_only_namespace(marks: str) -> subprocess.CompletedProcess:
    """This file's tests marked `marks`, run by pytest inside `unshare -n` with `lo` up."""
    if os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("ip")):
        pytest.skip("a network namespace needs root, unshare and ip (iproute2)")
    script = 'ip link set lo up && exec "$0" -m pytest "$1" -q -p no:cacheprovider -m "$2"'
    return subprocess.run(
        ["unshare", "-n", "sh", "-c", script, sys.executable, __file__, marks],
        env={**os.environ, "OVERMAP_NETNS": "1"},
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_ray_tests_pass_in_a_loopback_only_network_namespace():
    r = _in_a_loopback_only_namespace("netns and not slow")
    assert r.returncode == 0 and re.search(r"\b3 passed", r.stdout), r.stdout[-4000:]


@pytest.mark.slow
def test_ray_cluster_tests_pass_in_a_loopback_only_network_namespace():
    r = _in_a_loopback_only_namespace("netns and slow")
    assert r.returncode == 0 and re.search(r"\b2 passed", r.stdout), r.stdout[-4000:]
