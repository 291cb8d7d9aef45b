"""The field watcher's speed and memory, side by side in one run on real camera-trap frames.

    .venv/bin/python bench/bench_watch.py [--bundle edge/default_bundle] [--frames 96]
        [--eager-frames 16] [--rounds 3] [--seconds 60] [--settles 0.5 [2.0]]
        [--no-overlays] [--profile] [--old-tree /tmp/old] [--watcher-threads 1 2]

Four figures, each against its target, for small (MLWIC CA-01, 256x256), large (Peru S90,
768x576) and 12 MP frames (Peru S90 frames upscaled to 4000x3000 and re-encoded at JPEG
quality 90, their EXIF kept; made once and cached under the temp folder, see `twelve_mp`):

1. throughput: `run_once` over a temp inbox of N frames (move mode, OUT on the same
   filesystem, settle 0 because a card's frames are already whole), timed from the moment its
   sessions are open to its return (scan, admission with sha256, decode, bundle, background
   model, Over-MAP, triage, overlays, journal, moves, sidecars, results file), against the
   bundle's raw `Runtime.run` (resize + normalise + both models, all cores) on the same frames
   decoded beforehand, at the same batch size. Target: watcher/raw >= 0.70. The watcher runs
   as `edge watch` does (decoding and inference of the next batches in other threads, its own
   thread count); "serial" is the same watcher one batch at a time (lookahead 0, all cores
   to ONNX Runtime), to show what the overlap buys.
2. latency: `run_forever` in a thread while a feeder drops frames in (temp + rename) at 2
   frames/s; p50/p95 of `Stats.latencies` (watcher saw the file -> decided) and of rename ->
   decided, per settle time. Target: p95 < 2 s at a realistic settle (0.5 s); the default
   settle (2 s) is a deliberate wait that the latency includes by design.
3. memory: peak RSS (VmHWM) of a fresh process running `run_once` over N frames.
   Target < 600 MB. The eager pipeline's peak is shown beside it.
4. versus eager PyTorch: what a user would assemble today, OpenCV decode + EfficientNet-Lite0
   with pytorch-grad-cam's GradCAM at `model.features` + the lite0_seg segmenter in PyTorch,
   at the same batch size. Target: watcher/eager >= 6.

Throughput rounds run watcher, raw and eager in turn (the order rotates every round) so a
noisy shared machine slows them alike; we report medians and the spread. `--profile` adds the
CPU time of each of the watcher's threads per frame (`thread_cpu`), the watcher's CPU bound
(what the busiest thread, or both cores together, allow) and how close it gets, the decode
share, and a cProfile of one `run_once` (one batch at a time) on each frame set, grouped by
stage. `--old-tree DIR` (a worktree of an earlier commit) also runs that tree's own bench
`thread_cpu` in a fresh process on the same frames, interleaved with ours, and prints the
non-inference CPU per frame of both and their ratio.
"""

from __future__ import annotations

import argparse
import cProfile
import itertools
import json
import os
import platform
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from machine import cores, cpu_model, load_avg

ROOT = Path(__file__).resolve().parents[1]
CAMTRAP = ROOT.parent / "shared" / "data" / "camtrap"
SOURCES = {
    "small": CAMTRAP / "mlwic_examples",  # CA-01, 256x256, consecutive frames of one camera
    "large": CAMTRAP / "peru_s90_animl",  # two cameras, 768x576, day colour and night IR
    "12mp": Path(tempfile.gettempdir()) / "bench_watch_12mp",  # made by twelve_mp()
}
TWELVE_MP = (4000, 3000)
TWELVE_MP_FRAMES = 24  # distinct frames made (both Peru cameras); a round cycles them
TARGETS = {
    "raw": 0.70,
    "p95": 2.0,
    "rss": 600.0,
    "eager": 6.0,
    "bound": 0.90,
    "non_inference": 2 / 3,  # today / before: at least a third less
    "decode_12mp": 4.0,
}  # 12 MP decode CPU / 768x576 decode CPU: "a few times" at most


# --------------------------------------------------------------------------- data


def twelve_mp(folder: Path = SOURCES["12mp"]) -> Path:
    """Real 12 MP frames: Peru S90 frames (4:3) upscaled to 4000x3000 (bicubic), re-encoded at
    JPEG quality 90 with the original's EXIF segment (capture time) kept; cached in `folder`,
    so later runs reuse them. A camera trap writes frames this size; the data here has none."""
    import cv2

    files = sorted(p for p in SOURCES["large"].rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
    step = max(1, len(files) // TWELVE_MP_FRAMES)
    for src in files[::step][:TWELVE_MP_FRAMES]:
        dst = folder / src.parent.name / f"{src.stem}_12mp.jpg"
        if dst.exists():
            continue
        big = cv2.resize(cv2.imread(str(src)), TWELVE_MP, interpolation=cv2.INTER_CUBIC)
        ok, buf = cv2.imencode(".jpg", big, [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        data, exif, at = src.read_bytes(), b"", 2
        while data[at] == 0xFF and 0xE0 <= data[at + 1] <= 0xEF:  # the APPn header segments
            end = at + 2 + int.from_bytes(data[at + 2 : at + 4], "big")
            if data[at + 1] == 0xE1 and data[at + 4 : at + 8] == b"Exif":
                exif = data[at:end]
            at = end
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_suffix(".part")
        tmp.write_bytes(buf[:2].tobytes() + exif + buf[2:].tobytes())
        os.replace(tmp, dst)
    return folder


def source_frames(source: Path, n: int) -> list[tuple[str, Path]]:
    """n (camera, file) pairs in camera and frame order, cycling when the source has fewer."""
    if source == SOURCES["12mp"]:
        twelve_mp(source)
    files = sorted(p for p in source.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
    if not files:
        raise SystemExit(f"{source}: no frames (is ../shared/data beside the checkout?)")
    return [(p.parent.name, p) for p in itertools.islice(itertools.cycle(files), n)]


def fill_inbox(frames: list[tuple[str, Path]], inbox: Path) -> None:
    """Copy frames into inbox/<camera>/, numbered so repeats of a cycled source stay distinct."""
    for i, (camera, src) in enumerate(frames):
        (inbox / camera).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, inbox / camera / f"{i:05d}_{src.name}")


def frame_size(path: Path) -> str:
    import cv2

    h, w = cv2.imread(str(path)).shape[:2]
    return f"{w}x{h}"


# --------------------------------------------------------------------------- the watcher


def options(
    bundle,
    inbox: Path,
    out: Path,
    *,
    settle: float,
    batch: int,  # noqa: ANN001, ANN201
    threads: int | None,
    overlays: bool = True,
    lookahead: int = 2,
) -> object:
    """WatchOptions as `edge watch` builds them with no config file, no flags but these."""
    from edge.config import Config, resolve_thresholds
    from edge.watch import WatchOptions

    thresholds = resolve_thresholds(bundle.manifest.thresholds, Config(), {})
    return WatchOptions(
        inbox=inbox,
        out=out,
        thresholds=thresholds,
        settle=settle,
        batch=batch,
        threads=threads,
        overlays=overlays,
        lookahead=lookahead,
    )


def run_watcher_once(
    bundle,
    frames: list[tuple[str, Path]],
    work: Path,
    *,
    batch: int,  # noqa: ANN001
    threads: int | None,
    overlays: bool = True,
    lookahead: int = 2,
    profile: cProfile.Profile | None = None,
    on_open: Callable[[], None] | None = None,
    on_done: Callable[[], None] | None = None,
) -> dict[str, float]:
    """One `run_once` over a fresh inbox; frames/s from "sessions open" to return.
    `threads` None: the watcher's own choice (edge.watch.inference_threads). `on_open` and
    `on_done` are called in the calling thread once the sessions are open (where timing
    starts) and as run_once returns."""
    from edge import watch
    from edge.tui import Stats

    try:  # run_once lives in edge.loop and opens the sessions there
        from edge import loop as opener
    except ImportError:  # an older tree: all of it in edge.watch
        opener = watch

    inbox, out = work / "inbox", work / "out"
    fill_inbox(frames, inbox)
    opts = options(
        bundle,
        inbox,
        out,
        settle=0.0,
        batch=batch,
        threads=threads,
        overlays=overlays,
        lookahead=lookahead,
    )
    stats = Stats(out=out)
    opened: list[float] = []
    original = opener.open_scorer

    def timed_open(b, o, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        result = original(b, o, *args, **kwargs)
        opened.append(time.perf_counter())
        if on_open:
            on_open()
        return result

    opener.open_scorer = timed_open
    try:
        t0 = time.perf_counter()
        if profile:
            profile.enable()
        watch.run_once(bundle, opts, stats)
        if profile:
            profile.disable()
        t1 = time.perf_counter()
        if on_done:
            on_done()
    finally:
        opener.open_scorer = original
    handled = sum(stats.decisions.values())
    left = [p for p in inbox.rglob("*") if p.is_file()]
    if handled != len(frames) or left:
        raise RuntimeError(f"watcher handled {handled} of {len(frames)}; {len(left)} left")
    shutil.rmtree(inbox)
    shutil.rmtree(out)
    return {
        "fps": len(frames) / (t1 - opened[0]),
        "open_s": opened[0] - t0,
        **{f"n_{k}": v for k, v in stats.decisions.items()},
    }


# --------------------------------------------------------------------------- the baselines


def raw_runner(
    bundle,
    frames: list[tuple[str, Path]],
    batch: int,  # noqa: ANN001
    threads: int | None,
) -> Callable[[], float]:
    """Runtime.run over the frames decoded once beforehand, in batches; returns frames/s.
    Frames are decoded in full, except 12 MP ones: those at the watcher's reduced scale
    (edge.loader.min_side), as 24 of them in full would take 860 MB and resizing them would
    be the baseline's main work. A frame repeated by the cycle is decoded once."""
    from edge.decode import load_image
    from edge.loader import min_side
    from edge.runtime import Runtime

    runtime = Runtime.from_bundle(bundle, threads=threads)
    smallest = (
        min_side(runtime) if frames and frames[0][1].is_relative_to(SOURCES["12mp"]) else None
    )
    decoded: dict[Path, np.ndarray] = {}
    images = [
        decoded.setdefault(p, load_image(p, min_side=smallest)) if p not in decoded else decoded[p]
        for _, p in frames
    ]
    runtime.run(images[:batch])  # warm-up

    def run() -> float:
        t0 = time.perf_counter()
        for i in range(0, len(images), batch):
            runtime.run(images[i : i + batch])
        return len(images) / (time.perf_counter() - t0)

    return run


class EagerPipeline:
    """Decode (OpenCV) + Lite0 with pytorch-grad-cam GradCAM + lite0_seg, all eager PyTorch.

    The pipeline a user would assemble today; the preprocessing (resize, normalise) is the
    bundle's own numpy code, so only the model side differs from the watcher.
    """

    def __init__(self, spec, threads: int) -> None:  # noqa: ANN001
        import torch
        from pytorch_grad_cam import GradCAM

        from export.lite0 import load_imagenet_lite0
        from export.segmenter import build_segmenter

        torch.set_num_threads(threads)
        self.torch = torch
        self.spec = spec
        self.model = load_imagenet_lite0().eval()
        self.gradcam = GradCAM(model=self.model, target_layers=[self.model.features])
        self.segmenter = build_segmenter("lite0_seg").model.eval()

    def __call__(self, paths: list[Path]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        import cv2

        from edge.preprocess import prepare

        images = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in paths]
        x = self.torch.from_numpy(prepare(images, self.spec))
        cams = self.gradcam(input_tensor=x, targets=None)  # top class, [N,224,224]
        logits = self.gradcam.outputs.detach().numpy()
        with self.torch.inference_mode():
            foreground = self.segmenter(x).numpy()
        return logits, cams, foreground


def eager_runner(
    spec,
    frames: list[tuple[str, Path]],
    batch: int,  # noqa: ANN001
    threads: int,
) -> Callable[[], float]:
    pipeline = EagerPipeline(spec, threads)
    paths = [p for _, p in frames]
    pipeline(paths[:2])  # warm-up

    def run() -> float:
        t0 = time.perf_counter()
        for i in range(0, len(paths), batch):
            pipeline(paths[i : i + batch])
        return len(paths) / (time.perf_counter() - t0)

    return run


# --------------------------------------------------------------------------- latency


@dataclass
class TimedStats:
    """Stats that also keep when each file was decided, to time rename -> decision."""

    out: Path
    decided: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from edge.tui import Stats

        class _Stats(Stats):
            def record(inner, file: str, *args: object) -> None:  # noqa: N805
                super().record(file, *args)
                self.decided[file] = time.monotonic()

        self.stats = _Stats(out=self.out)


def latency_run(
    bundle,
    frames: list[tuple[str, Path]],
    work: Path,
    *,
    settle: float,  # noqa: ANN001
    seconds: float,
    fps: float,
    batch: int,
    threads: int | None,
) -> dict[str, float]:
    """run_forever in a thread, frames renamed into the inbox at `fps`; latencies in s."""
    from edge.watch import run_forever

    inbox, out, staging = work / "inbox", work / "out", work / "staging"
    for d in (inbox, staging):
        d.mkdir(parents=True)
    opts = options(bundle, inbox, out, settle=settle, batch=batch, threads=threads)
    timed = TimedStats(out=out)
    thread = threading.Thread(target=run_forever, args=(bundle, opts, timed.stats), daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while timed.stats.provider == "?" and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # the file watcher starts after the sessions
    arrived: dict[str, float] = {}
    n = int(seconds * fps)
    start = time.monotonic()
    for i, (camera, src) in enumerate(itertools.islice(itertools.cycle(frames), n)):
        time.sleep(max(0.0, start + i / fps - time.monotonic()))
        rel = f"{camera}/{i:05d}_{src.name}"
        (inbox / camera).mkdir(exist_ok=True)
        tmp = inbox / f"{rel}.part"  # a temp name the watcher ignores, then an atomic rename
        shutil.copyfile(src, tmp)
        os.replace(tmp, inbox / rel)
        arrived[rel] = time.monotonic()
    deadline = time.monotonic() + settle + 60
    while len(timed.decided) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    opts.stop.set()
    thread.join(timeout=60)
    watcher = np.asarray(timed.stats.latencies)
    e2e = np.asarray([timed.decided[r] - t for r, t in arrived.items() if r in timed.decided])
    shutil.rmtree(work)
    return {
        "n": n, "decided": len(e2e),
        "p50": float(np.percentile(watcher, 50)), "p95": float(np.percentile(watcher, 95)),
        "e2e_p50": float(np.percentile(e2e, 50)), "e2e_p95": float(np.percentile(e2e, 95)),
        "e2e_max": float(e2e.max()),
    }  # fmt: skip


# --------------------------------------------------------------------------- memory


def peak_rss_mb(
    kind: str, size: str, n: int, batch: int, bundle: Path, threads: int, cameras: int = 0
) -> float:
    """Peak RSS (MB) of a fresh process running the watcher (or the eager pipeline) on n frames,
    spread over `cameras` camera folders in consecutive blocks when > 0."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--child-size", size,
           "--frames", str(n), "--batch", str(batch), "--bundle", str(bundle),
           "--threads", str(threads), "--child-cameras", str(cameras)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def child(args: argparse.Namespace) -> None:
    """Run one workload and print this process's peak RSS in KiB."""
    from edge.bundle import load_bundle

    bundle = load_bundle(args.bundle)
    frames = source_frames(SOURCES[args.child_size], args.frames)
    if args.child_cameras:  # one background model per folder: memory grows with cameras
        per = -(-len(frames) // args.child_cameras)
        frames = [(f"{cam}-{i // per:02d}", p) for i, (cam, p) in enumerate(frames)]
    if args.child == "watcher":
        with tempfile.TemporaryDirectory(prefix="bench_watch_rss_") as tmp:
            run_watcher_once(
                bundle, frames, Path(tmp), batch=args.batch, threads=args.threads or None
            )
        assert "torch" not in sys.modules, "the watcher must not import torch"
    else:
        run = eager_runner(bundle.manifest.classifier.input, frames, args.batch, args.threads)
        run()
    print(peak_rss_kib())


def peak_rss_kib() -> int:
    """This process's peak resident set, KiB: VmHWM, else ru_maxrss.

    Not ru_maxrss first: Linux carries the parent's peak into a child across fork/vfork + exec
    (the old mm's high-water mark is folded into the child's maxrss at exec), so a child
    started from a 1 GB benchmark reports at least 1 GB. VmHWM belongs to the new mm alone.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


# --------------------------------------------------------------------------- profile


STAGES = {  # stage -> (module file, function) whose cumulative time is that stage's
    "decode (decode_frame, reduced)": ("decode.py", "decode_frame"),
    "exif capture time": ("exif.py", "when_taken"),
    "bundle: resize+normalise": ("runtime.py", "prepare"),
    "bundle: classifier+segmenter": ("runtime.py", "infer"),
    "scoring (Scorer.score)": ("scorer.py", "score"),
    "triage (decide_batch)": ("decide.py", "decide_batch"),
    "background models learn (Scorer.learn)": ("scorer.py", "learn"),
    "background model: foreground": ("background.py", "foreground"),
    "background model: update": ("background.py", "update"),
    "Over-MAP (score_frame)": ("overmap.py", "score_frame"),
    "overlay data (pack_overlay)": ("overlay.py", "pack_overlay"),
    "admission (sha256+journal)": ("sink.py", "admit"),
    "place (move, sha256 check)": ("sink.py", "place"),
    "sidecars": ("sink.py", "sidecar"),
    "folder fsyncs": ("sink.py", "fsync_dirs"),
    "journal transactions": ("journal.py", "transaction"),
    "results file": ("reports.py", "write_results"),
    "scan + stability gate": ("stability.py", "poll"),
}


def print_profile(prof: cProfile.Profile, label: str, n: int) -> None:
    """Cumulative time per stage (stages overlap where one calls another) and the top calls.

    A name defined twice (CameraBackgrounds.update wraps BackgroundModel.update) counts once,
    by its outermost, largest cumulative time.
    """
    st = pstats.Stats(prof)
    total = max(v[3] for v in st.stats.values())  # type: ignore[attr-defined]
    by_stage: dict[str, float] = {}
    for (file, _line, func), (_cc, _nc, _tt, ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
        for stage, (mod, name) in STAGES.items():
            if func == name and file.endswith(mod):
                by_stage[stage] = max(by_stage.get(stage, 0.0), ct)  # outermost
    print(
        f"\nprofile of run_once one batch at a time (lookahead 0, so that every stage runs "
        f"in the profiled thread), {label}: {n} frames, {total:.2f} s in all (cProfile on)"
    )
    for stage, t in sorted(by_stage.items(), key=lambda kv: -kv[1]):
        print(f"  {stage:<32}{t:>7.2f} s {100 * t / total:>5.1f} %  {1000 * t / n:>6.2f} ms/frame")
    st.sort_stats("tottime").print_stats(12)


def thread_cpu(
    bundle,
    frames: list[tuple[str, Path]],
    work: Path,  # noqa: ANN001
    batch: int,
) -> dict[str, float]:
    """CPU ms per frame of each thread of the pipelined watcher over one run_once, as `edge
    watch` runs it (lookahead, its own thread count), from the moment the sessions are open.

    time.thread_time around the stages, which Loader calls as module globals: edge.loader.read
    (decode, EXIF, resize, normalise; the "edge-load" thread) and edge.loader.infer (the
    models; "edge-infer"), and edge.loop.Pipeline._decide in the main thread less what it
    spends in Loader.get (waiting costs no CPU; a batch not started ahead is read and
    inferred there, and counted as such). edge.loader.decode_frame gives the decode share.

    The CPU bound is the old bench's "even with both cores busy all the time" (process CPU /
    cores) and, since each stage runs in one thread, the busiest thread: 1000 / max(process
    / cores, load, inference, main) frames/s. `old_*` rows measure as the old bench did: from
    before the inbox is filled to after it is removed (session opening included), for a
    comparison with an older tree's `thread_cpu`.
    """
    from edge import loader, loop

    main_thread = threading.main_thread()
    cpu: dict[tuple[str, str], float] = {}  # (stage, "main" or "other") -> s
    wall_in: dict[tuple[str, str], float] = {}  # the same, wall clock
    lock = threading.Lock()

    first: dict[str, float] = {}  # stage -> wall clock of its first call

    def timed(stage: str, f: Callable) -> Callable:
        def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            first.setdefault(stage, w0 := time.perf_counter())
            t0 = time.thread_time()
            try:
                return f(*args, **kwargs)
            finally:
                where = "main" if threading.current_thread() is main_thread else "other"
                with lock:
                    key = (stage, where)
                    cpu[key] = cpu.get(key, 0.0) + time.thread_time() - t0
                    wall_in[key] = wall_in.get(key, 0.0) + time.perf_counter() - w0

        return wrapper

    patches = [
        (loader, "read"),
        (loader, "infer"),
        (loader, "decode_frame"),
        (loader.Loader, "get"),
        (loop.Pipeline, "_decide"),
    ]
    originals = [(owner, name, getattr(owner, name)) for owner, name in patches]
    for owner, name, f in originals:
        setattr(owner, name, timed(name, f))
    at_open: list[float] = []
    at_done: list[float] = []
    try:
        main0, wall0 = time.thread_time(), time.perf_counter()
        run = run_watcher_once(
            bundle,
            frames,
            work,
            batch=batch,
            threads=None,
            on_open=lambda: at_open.extend(
                (time.thread_time(), time.process_time(), time.perf_counter())
            ),
            on_done=lambda: at_done.extend(
                (time.thread_time(), time.process_time(), time.perf_counter())
            ),
        )
        main_after = time.thread_time()
        wall = time.perf_counter() - wall0
    finally:
        for owner, name, f in originals:
            setattr(owner, name, f)
    # from "open" to "return"; setup and cleanup are in the old-definition rows only
    n = len(frames) / 1000
    c = {
        stage: cpu.get((stage, "main"), 0.0) + cpu.get((stage, "other"), 0.0)
        for stage in ("read", "infer", "decode_frame", "get", "_decide")
    }
    main_total = at_done[0] - at_open[0]
    proc = at_done[1] - at_open[1]
    main_ahead = cpu.get(("read", "main"), 0.0) + cpu.get(("infer", "main"), 0.0)
    scoring = c["_decide"] - c["get"]
    load_t, infer_t = cpu.get(("read", "other"), 0.0), cpu.get(("infer", "other"), 0.0)
    bound_ms = max(proc / cores(), load_t, infer_t, main_total) / n
    return {
        "load thread (decode, EXIF, resize, normalise)": load_t / n,
        "  of which decode (decode_frame, all threads)": c["decode_frame"] / n,
        "inference thread (the models)": infer_t / n,
        "main: scoring, triage, background (_decide - get)": scoring / n,
        "main: load + infer itself (batch not started ahead)": main_ahead / n,
        "main: the rest (gate, journal, moves, sidecars)": (main_total - c["_decide"]) / n,
        "main thread in all": main_total / n,
        "whole process": proc / n,
        "non-inference on the decision path": (proc - c["infer"]) / n,
        "decode share of process CPU (%)": 100 * c["decode_frame"] / proc,
        "CPU bound (ms/frame: busiest thread or process/cores)": bound_ms,
        "CPU bound (frames/s)": 1000 / bound_ms,
        "watcher (frames/s, this run)": run["fps"],
        "watcher / its CPU bound": run["fps"] * bound_ms / 1000,
        "wall clock (ms/frame, with setup)": wall / n,
        # before this, the main thread admits frames (gate, sha256, journal) with nothing ahead
        "wall from sessions open to the first decode (ms)": 1000 * (first["read"] - at_open[2]),
        # the main thread's wall clock when not waiting for a batch: its CPU plus what it waits
        # on the disk (journal commits, fsyncs); near the wall per frame, it is the bottleneck
        "main thread busy, wall (not in Loader.get)":
            (at_done[2] - at_open[2] - wall_in.get(("get", "main"), 0.0)) / n,
        "load thread busy, wall (in read)": wall_in.get(("read", "other"), 0.0) / n,
        "inference thread busy, wall (in infer)": wall_in.get(("infer", "other"), 0.0) / n,
        "wall per frame (sessions open to return)": (at_done[2] - at_open[2]) / n,
        # as the old bench measured (setup and cleanup in "main: the rest"):
        "old_load": c["read"] / n, "old_scoring": scoring / n,
        "old_rest": (main_after - main0 - c["_decide"]) / n,
    }  # fmt: skip


OLD_CPU = """
import json, sys
from pathlib import Path
old, bundle, work, batch, frames = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), \
    json.loads(sys.argv[5])
sys.path[:0] = [old + "/bench", old]
import edge
assert Path(edge.__file__).resolve().is_relative_to(Path(old).resolve()), edge.__file__
import bench_watch
from edge.bundle import load_bundle
r = bench_watch.thread_cpu(load_bundle(bundle), [(c, Path(p)) for c, p in frames], Path(work),
                           batch)
print(json.dumps({"edge": edge.__file__, **r}))
"""


def old_thread_cpu(
    tree: Path, bundle: Path, frames: list[tuple[str, Path]], work: Path, batch: int
) -> dict[str, float]:
    """The older tree's own bench `thread_cpu` (Decider._load/_infer/_finish) in a fresh
    process with that tree first on the path, on these frames. Its "the rest" includes filling
    the inbox, opening the sessions and removing the inbox (compare with our old_* rows)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [
        sys.executable,
        "-c",
        OLD_CPU,
        str(tree),
        str(bundle),
        str(work),
        str(batch),
        json.dumps([(c, str(p)) for c, p in frames]),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=tree, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def non_inference(old: dict[str, float]) -> float:
    """An older tree's non-inference CPU per frame on the decision path: loader + main."""
    return (
        old["loader"]
        + old["main: scoring, background, overlays"]
        + old["main: the rest (gate, journal, moves, sidecars)"]
    )


# --------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--bundle",
        type=Path,
        default=None,
        help="default: the shipped bundle (edge.cli.default_bundle)",
    )
    ap.add_argument(
        "--frames",
        type=int,
        default=320,
        help="frames per watcher/raw round (20 batches: sustained, the pipeline's "
        "fill and drain a small share)",
    )
    ap.add_argument("--eager-frames", type=int, default=16, help="frames per eager round")
    ap.add_argument("--batch", type=int, default=16, help="watcher, raw and eager batch")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="ORT and torch threads")
    ap.add_argument("--seconds", type=float, default=60.0, help="latency run length")
    ap.add_argument("--fps", type=float, default=2.0, help="latency arrival rate")
    ap.add_argument("--settles", type=float, nargs="*", default=[0.5], help="e.g. 0.5 2.0")
    ap.add_argument(
        "--no-overlays",
        dest="overlays",
        action="store_false",
        help="watcher throughput without review overlays (to see their cost)",
    )
    ap.add_argument("--latency-sizes", nargs="*", default=["small"], choices=list(SOURCES))
    ap.add_argument("--sizes", nargs="*", default=list(SOURCES), choices=list(SOURCES))
    ap.add_argument(
        "--profile", action="store_true", help="CPU per thread, and cProfile one run_once per size"
    )
    ap.add_argument("--cpu-frames", type=int, default=160, help="frames per --profile CPU run")
    ap.add_argument(
        "--old-tree",
        type=Path,
        default=None,
        help="with --profile: a worktree of an earlier commit whose bench's "
        "thread_cpu runs on the same frames, interleaved (e.g. /tmp/old)",
    )
    ap.add_argument(
        "--watcher-threads",
        type=int,
        nargs="*",
        default=[],
        help="also time the watcher with these ONNX Runtime thread counts",
    )
    ap.add_argument(
        "--cameras",
        type=int,
        default=0,
        help="also the watcher's peak RSS over --camera-frames small frames spread "
        "over this many camera folders (e.g. 20)",
    )
    ap.add_argument("--camera-frames", type=int, default=2000)
    ap.add_argument("--child", choices=["watcher", "eager"], help=argparse.SUPPRESS)
    ap.add_argument("--child-cameras", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--child-size", choices=list(SOURCES), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.bundle is None:
        from edge.cli import default_bundle

        args.bundle = default_bundle()
    if args.child:
        child(args)
        return

    import cv2
    import onnxruntime

    from edge.bundle import load_bundle

    bundle = load_bundle(args.bundle)
    m = bundle.manifest
    load_at_start = load_avg()
    work = Path(tempfile.mkdtemp(prefix="bench_watch_"))
    results: dict[str, dict] = {}
    try:
        for size in args.sizes:
            frames = source_frames(SOURCES[size], args.frames)
            eager_frames = frames[: args.eager_frames]
            runners: dict[str, Callable[[], dict[str, float]]] = {
                "watcher": lambda f=frames: run_watcher_once(
                    bundle, f, work / "w", batch=args.batch, threads=None, overlays=args.overlays
                ),
                "serial": lambda f=frames: run_watcher_once(
                    bundle,
                    f,
                    work / "w",
                    batch=args.batch,
                    threads=args.threads,
                    overlays=args.overlays,
                    lookahead=0,
                ),
            }
            for t in args.watcher_threads:
                runners[f"watcher {t}t"] = lambda f=frames, t=t: run_watcher_once(
                    bundle, f, work / "w", batch=args.batch, threads=t, overlays=args.overlays
                )
            raw = raw_runner(bundle, frames, args.batch, args.threads)
            eager = eager_runner(m.classifier.input, eager_frames, args.batch, args.threads)
            runners["raw"] = lambda r=raw: {"fps": r()}
            runners["eager"] = lambda e=eager: {"fps": e()}
            runs: dict[str, list[dict[str, float]]] = {k: [] for k in runners}
            names = list(runners)
            for r in range(args.rounds):
                k = r % len(names)
                for name in names[k:] + names[:k]:  # rotate the order each round
                    runs[name].append(runners[name]())
            results[size] = {
                "runs": runs,
                "frame": frame_size(frames[0][1]),
                "n": len(frames),
                "n_eager": len(eager_frames),
            }
            del raw, eager, runners
        counts = {"watcher": args.frames, "eager": args.eager_frames}
        rss = {size: {kind: peak_rss_mb(kind, size, n, args.batch, args.bundle,
                                        args.threads if kind == "eager" else 0)
                      for kind, n in counts.items()}
               for size in args.sizes}  # fmt: skip
        rss_cameras = (
            peak_rss_mb(
                "watcher",
                "small",
                args.camera_frames,
                args.batch,
                args.bundle,
                0,
                cameras=args.cameras,
            )
            if args.cameras
            else None
        )
        latency = {(size, s): latency_run(bundle, source_frames(SOURCES[size], 400),
                                          work / f"lat_{size}_{s}", settle=s,
                                          seconds=args.seconds, fps=args.fps, batch=args.batch,
                                          threads=None)
                   for size in args.latency_sizes for s in args.settles}  # fmt: skip
        profiles, cpu, old_cpu = {}, {}, {}
        if args.profile:
            runs_new: dict[str, list[dict[str, float]]] = {size: [] for size in args.sizes}
            runs_old: dict[str, list[dict[str, float]]] = {size: [] for size in args.sizes}
            for r in range(args.rounds):
                for size in args.sizes:
                    f = source_frames(SOURCES[size], args.cpu_frames)
                    order = ["new", "old"] if args.old_tree else ["new"]
                    for which in order[r % len(order) :] + order[: r % len(order)]:
                        if which == "new":
                            runs_new[size].append(thread_cpu(bundle, f, work / "c", args.batch))
                        else:
                            runs_old[size].append(
                                old_thread_cpu(
                                    args.old_tree, args.bundle, f, work / "o", args.batch
                                )
                            )
            cpu = {
                size: {k: statistics.median(v[k] for v in rs) for k in rs[0]}
                for size, rs in runs_new.items()
            }
            old_cpu = {
                size: {k: statistics.median(v[k] for v in rs) for k in rs[0] if k != "edge"}
                | {"edge": rs[0]["edge"]}
                for size, rs in runs_old.items()
                if rs
            }
            for size in args.sizes:
                prof = cProfile.Profile()
                run_watcher_once(
                    bundle,
                    source_frames(SOURCES[size], args.frames),
                    work / "p",
                    batch=args.batch,
                    threads=args.threads,
                    lookahead=0,
                    profile=prof,
                )
                profiles[size] = prof
    finally:
        shutil.rmtree(work, ignore_errors=True)

    import pytorch_grad_cam
    import torch

    from edge.watch import WatchOptions, inference_threads

    watcher_threads = inference_threads(WatchOptions(inbox=work, out=work, thresholds={}))
    print(
        f"machine: {cpu_model()}, {cores()} cores, load avg {load_at_start} at the start, "
        f"{load_avg()} at the end"
    )
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, onnxruntime "
        f"{onnxruntime.__version__}, opencv {cv2.__version__}, torch {torch.__version__}, "
        f"grad-cam {getattr(pytorch_grad_cam, '__version__', '1.5.x')}"
    )
    print(
        f"bundle: {args.bundle} (target {m.target}, classifier {m.classifier.precision} "
        f"{len(m.classifier.classes)} classes, segmenter {m.segmenter.precision}), "
        f"batch {args.batch}; threads: raw, serial and eager {args.threads} (ONNX Runtime "
        f"intra-op, torch), watcher its own choice ({watcher_threads} intra-op + loader)"
    )
    print(
        f"throughput: median of {args.rounds} interleaved rounds (min..max); watcher = "
        f"run_once, move mode, settle 0, overlays {'on' if args.overlays else 'off'}, "
        "from sessions open to return; serial = the same one batch at a time (lookahead 0)\n"
    )
    head = (
        f"{'frames':<16}{'watcher f/s':>14}{'serial f/s':>14}{'raw f/s':>14}"
        f"{'eager f/s':>14}{'watcher/raw':>13}{'watcher/eager':>15}{'watcher/serial':>16}"
    )
    print(head)
    for size, res in results.items():
        med = {k: statistics.median(r["fps"] for r in v) for k, v in res["runs"].items()}
        cell = {k: f"{med[k]:.1f} ({min(r['fps'] for r in v):.0f}..{max(r['fps'] for r in v):.0f})"
                for k, v in res["runs"].items()}  # fmt: skip
        res["med"] = med
        print(
            f"{size + ' ' + res['frame']:<16}{cell['watcher']:>14}{cell['serial']:>14}"
            f"{cell['raw']:>14}{cell['eager']:>14}{med['watcher'] / med['raw']:>13.2f}"
            f"{med['watcher'] / med['eager']:>15.2f}{med['watcher'] / med['serial']:>16.2f}"
        )
    for size, res in results.items():
        for t in args.watcher_threads:
            v, med = res["runs"][f"watcher {t}t"], res["med"][f"watcher {t}t"]
            print(
                f"  {size}: watcher with {t} ONNX Runtime thread(s): {med:.1f} "
                f"({min(r['fps'] for r in v):.0f}..{max(r['fps'] for r in v):.0f}) f/s, "
                f"{med / res['med']['watcher']:.2f}x its own choice"
            )
    for size, res in results.items():
        last = res["runs"]["watcher"][-1]
        decisions = {k[2:]: int(v) for k, v in last.items() if k.startswith("n_")}
        print(
            f"  {size}: {res['n']} frames watcher/raw, {res['n_eager']} eager; opening the "
            f"sessions {statistics.median(r['open_s'] for r in res['runs']['watcher']):.2f} s "
            f"(not counted); decisions {decisions}"
        )
    print(
        f"\npeak RSS (MB), fresh process, watcher {args.frames} frames, eager "
        f"{args.eager_frames}: "
        + "; ".join(
            f"{size}: watcher {v['watcher']:.0f}, eager {v['eager']:.0f}" for size, v in rss.items()
        )
    )
    if rss_cameras is not None:
        print(
            f"peak RSS (MB), fresh process, watcher over {args.camera_frames} small frames in "
            f"{args.cameras} camera folders: {rss_cameras:.0f}"
        )
    if latency:
        print(
            f"\nlatency at {args.fps:g} frames/s for {args.seconds:g} s (run_forever, file "
            "events or polling as `edge watch` picks), seconds:"
        )
        print(
            f"{'frames':<8}{'settle':>8}{'decided':>10}{'p50':>8}{'p95':>8}"
            f"{'rename->decided p50':>21}{'p95':>8}{'max':>8}"
        )
        for (size, s), v in latency.items():
            print(
                f"{size:<8}{s:>8.1f}{str(v['decided']) + '/' + str(v['n']):>10}"
                f"{v['p50']:>8.2f}{v['p95']:>8.2f}{v['e2e_p50']:>21.2f}{v['e2e_p95']:>8.2f}"
                f"{v['e2e_max']:>8.2f}"
            )
    if cpu:
        print(
            f"\nCPU ms per frame by thread, the watcher as edge watch runs it, "
            f"{args.cpu_frames} frames, median of {args.rounds} runs (from sessions open to "
            "return; old_* rows: as the old bench measured, setup and cleanup included):"
        )
        print(f"{'':<56}" + "".join(f"{size:>10}" for size in cpu))
        for row in next(iter(cpu.values())):
            print(f"{row:<56}" + "".join(f"{v[row]:>10.2f}" for v in cpu.values()))
    compare: dict[str, tuple[float, float]] = {}
    if old_cpu:
        print(
            f"\nnon-inference CPU ms per frame on the decision path, today vs {args.old_tree} "
            f"(its own bench's thread_cpu, edge from {next(iter(old_cpu.values()))['edge']}), "
            f"same frames, interleaved, both measured the old bench's way (loader + main "
            f"thread from inbox fill to cleanup, less the main thread's inference):"
        )
        print(
            f"{'':<14}{'old loader':>11}{'old main':>10}{'old rest':>10}{'old sum':>9}"
            f"{'new loader':>11}{'new main':>10}{'new rest':>10}{'new sum':>9}{'new/old':>9}"
        )
        for size, o in old_cpu.items():
            n = cpu[size]
            new_sum = n["old_load"] + n["old_scoring"] + n["old_rest"]
            compare[size] = (non_inference(o), new_sum)
            print(
                f"{size:<14}{o['loader']:>11.2f}"
                f"{o['main: scoring, background, overlays']:>10.2f}"
                f"{o['main: the rest (gate, journal, moves, sidecars)']:>10.2f}"
                f"{non_inference(o):>9.2f}{n['old_load']:>11.2f}{n['old_scoring']:>10.2f}"
                f"{n['old_rest']:>10.2f}{new_sum:>9.2f}{new_sum / non_inference(o):>9.2f}"
            )

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "MISS"

    print("\ntargets:")
    for size, res in results.items():
        ratio = res["med"]["watcher"] / res["med"]["raw"]
        speedup = res["med"]["watcher"] / res["med"]["eager"]
        print(
            f"  {size}: watcher {res['med']['watcher']:.1f} f/s; watcher/eager {speedup:.2f} "
            f"(>= {TARGETS['eager']:g}) {verdict(speedup >= TARGETS['eager'])}; "
            f"RSS {rss[size]['watcher']:.0f} MB (< {TARGETS['rss']:.0f}) "
            f"{verdict(rss[size]['watcher'] < TARGETS['rss'])}; watcher/raw {ratio:.2f} "
            f"(>= {TARGETS['raw']:g}) {verdict(ratio >= TARGETS['raw'])}"
        )
    for (size, s), v in latency.items():
        ok = v["p95"] < TARGETS["p95"]
        print(
            f"  {size}, settle {s:g}, {args.fps:g} frames/s: p95 {v['p95']:.2f} s "
            f"(< {TARGETS['p95']:g}) {verdict(ok)}"
            + ("" if s <= 0.5 else " (settle included by design)")
        )
    for size, v in cpu.items():
        share = v["watcher / its CPU bound"]
        fps = results[size]["med"]["watcher"] if size in results else float("nan")
        print(
            f"  {size}: watcher / its CPU bound {share:.2f} (>= {TARGETS['bound']:g}) "
            f"{verdict(share >= TARGETS['bound'])} ({v['watcher (frames/s, this run)']:.1f} of "
            f"{v['CPU bound (frames/s)']:.1f} f/s in the same run; the throughput median "
            f"{fps:.1f} f/s is {fps / v['CPU bound (frames/s)']:.2f} of it)"
        )
    for size, (old, new) in compare.items():
        print(
            f"  {size}: non-inference CPU today/before {new:.2f}/{old:.2f} ms = "
            f"{new / old:.2f} (<= {TARGETS['non_inference']:.2f}, a third less) "
            f"{verdict(new / old <= TARGETS['non_inference'])}"
        )
    for size, o in old_cpu.items():  # where the overlay was drawn: scoring to decision
        old_s, new_s = o["main: scoring, background, overlays"], cpu[size]["old_scoring"]
        print(
            f"  {size}: the decision stage alone (score, triage, background models, overlay) "
            f"today/before {new_s:.2f}/{old_s:.2f} ms = {new_s / old_s:.2f} "
            f"(<= {TARGETS['non_inference']:.2f}) "
            f"{verdict(new_s / old_s <= TARGETS['non_inference'])}"
        )
    if "12mp" in cpu and "large" in cpu:
        whole = cpu["12mp"]["whole process"] / cpu["large"]["whole process"]
        print(
            f"  12 MP frame / 768x576 frame, whole process CPU: {whole:.1f}x "
            f"(<= {TARGETS['decode_12mp']:g}, 'a few times') "
            f"{verdict(whole <= TARGETS['decode_12mp'])}"
        )
        big = cpu["12mp"]["  of which decode (decode_frame, all threads)"]
        ref = cpu["large"]["  of which decode (decode_frame, all threads)"]
        print(
            f"  12 MP decode CPU / 768x576 decode CPU: {big:.2f}/{ref:.2f} ms = "
            f"{big / ref:.1f}x (<= {TARGETS['decode_12mp']:g}, 'a few times'; 27x the pixels) "
            f"{verdict(big / ref <= TARGETS['decode_12mp'])}; decode share of CPU: 12 MP "
            f"{cpu['12mp']['decode share of process CPU (%)']:.0f} %, 768x576 "
            f"{cpu['large']['decode share of process CPU (%)']:.0f} %"
        )
    for size, prof in profiles.items():
        print_profile(prof, size, args.frames)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
