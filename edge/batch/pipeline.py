"""The driver of `edge batch`: Ray (a cluster's address, or one started here), the listing,
the chunks still to do through an actor pool, then the merge.

Imports ray: only `edge batch` imports this module, when it runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.batch.listing import (
    Chunk,
    Listed,
    capture_order,
    capture_times,
    list_frames,
    make_chunks,
)
from edge.batch.merge import Place, merge, place, write_results
from edge.batch.shards import SHARDS, clean_temps, is_complete
from edge.batch.worker import ChunkOptions, ChunkWorker
from edge.bundle import load_bundle
from edge.results import BundleInfo, FrameRecord, write_json_atomic
from edge.triage import BURST_FRAMES

SHARD_FORMAT = 1  # bump when what a shard holds changes: old shards are then not reused
TIMES = "batch/times.json"  # the capture times read so far, by frame


@dataclass
class BatchOptions:
    source: Path  # a folder tree or a list file
    out: Path
    bundle: Path
    thresholds: dict[str, float]
    address: str | None = None  # None: a Ray started here, for this run
    workers: int = 1  # actors, one Runtime each
    chunk_frames: int = 256
    warmup: int = 32  # frames before a chunk that prime its background model and bursts
    batch: int = 16
    burst_gap: float = 10.0
    burst_frames: int = BURST_FRAMES
    gpus: bool | None = None  # None: one GPU per actor where the cluster has enough
    threads: int = 1  # ONNX Runtime threads per actor
    num_cpus: int | None = None  # the local Ray's CPUs (default: workers + 1)
    object_store_mb: int = 200
    place: Place | None = None  # a sorted copy or links under OUT
    camtrap_config: Path | None = None
    providers: list[str] | None = None
    log: Callable[[str], None] = field(default=lambda s: None)


@dataclass
class BatchReport:
    frames: int
    chunks: int
    chunks_done_before: int
    failures: int
    results: list[Path]
    missing: list[str]
    providers: set[str]
    seconds: float
    camtrap: Any = None
    phases: dict[str, float] = field(default_factory=dict)  # seconds: ray, listing, ...


def signature(opts: BatchOptions) -> str:
    """What a shard depends on besides its frames: the bundle's files, thresholds, bursts."""
    manifest = (opts.bundle / "manifest.json").read_bytes()
    return json.dumps(
        {
            "format": SHARD_FORMAT,
            "bundle": hashlib.sha256(manifest).hexdigest(),
            "thresholds": sorted(opts.thresholds.items()),
            "gap": opts.burst_gap,
            "burst": opts.burst_frames,
            "batch": opts.batch,
        }
    )


def loopback_only() -> None:
    """Keep an embedded Ray on 127.0.0.1: Ray's own single-machine mode (the one it uses on
    macOS and Windows), so a Ray that serves nobody else never listens on the network. Set
    before Ray starts; the processes it spawns inherit it."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray._private.ray_constants as constants

    constants.ENABLE_RAY_CLUSTER = False  # read when the node's address is chosen


def start_ray(opts: BatchOptions) -> Any:
    """Connect to `address`, or start a Ray here with few CPUs and a modest object store."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # Ray reports nothing home
    if not opts.address:
        loopback_only()
    import ray

    if ray.is_initialized():
        return ray
    common: dict[str, Any] = {"log_to_driver": False, "configure_logging": False}
    if opts.address:
        ray.init(address=opts.address, **common)
    else:
        # "local": a Ray of this run's own, even where a cluster runs on this machine
        ray.init(
            address="local",
            num_cpus=opts.num_cpus or opts.workers + 1,
            include_dashboard=False,
            object_store_memory=opts.object_store_mb * 2**20,
            **common,
        )
    ray.data.DataContext.get_current().enable_progress_bars = False
    return ray


def _from_items(ray: Any, items: list[dict[str, Any]]) -> Any:
    try:
        return ray.data.from_items(items, override_num_blocks=len(items))
    except TypeError:  # Ray before 2.10
        return ray.data.from_items(items, parallelism=len(items))


def probe_times(
    ray: Any, root: Path, frames: list[Listed], *, cache: Path | None = None, block: int = 512
) -> list[Listed]:
    """Every frame's capture time, read in Ray tasks, `block` frames a task. `cache`: the
    times a run read before, by frame (path, size, mtime); only the others are read, and the
    cache is rewritten (atomically) with all of them."""
    known: dict[tuple[str, int, int], tuple[str | None, str | None]] = {}
    if cache is not None and cache.is_file():
        try:
            known = {(r, s, m): (t, src) for r, s, m, t, src in json.loads(cache.read_text())}
        except (OSError, ValueError, TypeError):
            known = {}  # a damaged cache is read again, not trusted
    todo = [f for f in frames if f.key not in known]
    read = ray.remote(num_cpus=0.5)(capture_times)
    refs = [
        read.remote(str(root), [f.relpath for f in todo[i : i + block]])
        for i in range(0, len(todo), block)
    ]
    times = [t for part in ray.get(refs) for t in part]
    known.update((f.key, t) for f, t in zip(todo, times, strict=True))
    if cache is not None and todo:
        write_json_atomic(cache, [[*f.key, *known[f.key]] for f in frames])
    return [Listed(f.relpath, f.size, f.mtime_ns, *known[f.key]) for f in frames]


def run_chunks(
    ray: Any,
    todo: list[Chunk],
    copts: ChunkOptions,
    opts: BatchOptions,
    on_done: Callable[[dict[str, Any]], None],
) -> None:
    """The chunks through an actor pool of `workers` actors, one chunk per call."""
    gpus = opts.gpus
    if gpus is None:
        gpus = ray.cluster_resources().get("GPU", 0) >= opts.workers
    ds = _from_items(ray, [{"chunk": c.to_json()} for c in todo])
    done = ds.map_batches(
        ChunkWorker,
        fn_constructor_kwargs={"opts": copts},
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=min(opts.workers, len(todo))),
        # one thread: half a CPU, so a one-CPU node still has room for the decode tasks
        num_cpus=opts.threads if opts.threads > 1 else 0.5,
        num_gpus=1 if gpus else 0,
    )
    for row in done.iter_rows():
        on_done(row)


def run_batch(opts: BatchOptions) -> BatchReport:
    """List, chunk, run what no complete shard holds yet, merge; see the package docstring."""
    t0 = time.monotonic()
    out = opts.out.resolve()
    shard_dir = out / SHARDS
    phases: dict[str, float] = {}

    def lap(name: str) -> None:
        phases[name] = time.monotonic() - t0 - sum(phases.values())

    root, listed = list_frames(opts.source, exclude=[out])
    opts.log(f"{len(listed)} frames listed under {root}")
    lap("listing")
    ray = start_ray(opts)
    lap("ray")
    ordered = capture_order(probe_times(ray, root, listed, cache=out / TIMES))
    chunks = make_chunks(
        ordered, size=opts.chunk_frames, warmup=opts.warmup, signature=signature(opts)
    )
    clean_temps(shard_dir)
    todo = [c for c in chunks if not is_complete(shard_dir, c.id)]
    opts.log(f"{len(chunks)} chunks, {len(chunks) - len(todo)} already done")
    copts = ChunkOptions(
        bundle=str(opts.bundle.resolve()),
        root=str(root),
        shard_dir=str(shard_dir),
        thresholds=dict(opts.thresholds),
        burst_gap=opts.burst_gap,
        burst_frames=opts.burst_frames,
        batch=opts.batch,
        threads=opts.threads,
        providers=opts.providers,
    )
    providers: set[str] = set()

    def on_done(row: dict[str, Any]) -> None:
        providers.add(str(row["provider"]))
        opts.log(f"chunk {row['chunk']}: {row['frames']} frames, {row['failures']} unreadable")

    lap("times")
    if todo:
        run_chunks(ray, todo, copts, opts, on_done)
    lap("chunks")
    records, missing = merge(shard_dir, chunks)
    manifest = load_bundle(opts.bundle).manifest
    info = BundleInfo.from_manifest(manifest)
    if opts.place:
        records = place(records, root, out, opts.place)
    results = write_results(out, records, info, opts.thresholds, sorted_view=bool(opts.place))
    camtrap = None
    if opts.camtrap_config is not None:
        camtrap = export_camtrap(records, out, info, opts.camtrap_config, bool(opts.place))
    lap("merge")
    return BatchReport(
        frames=len(records),
        chunks=len(chunks),
        chunks_done_before=len(chunks) - len(todo),
        failures=sum(r.failure is not None for r in records),
        results=results,
        missing=[f.relpath for f in missing],
        providers=providers,
        seconds=time.monotonic() - t0,
        camtrap=camtrap,
        phases=phases,
    )


def export_camtrap(
    records: list[FrameRecord], out: Path, info: BundleInfo, config: Path, sorted_view: bool
) -> Any:
    """OUT/camtrap-dp from the merged records (paths of the sorted view when there is one)."""
    from edge.camtrapdp import write_camtrap_dp
    from edge.config import load_config

    return write_camtrap_dp(
        out / "camtrap-dp",
        records,
        load_config(config),
        bundle_info=info,
        paths="dest" if sorted_view else "relpath",
    )
