"""The work of one chunk: decode its frames, score and decide them in order, write its shard.

`decode_many` is what the Ray tasks run (edge.decode, a frame that cannot be read is a
failure with its reason, whatever raised). :class:`ChunkWorker` is the actor class of the
pool: it holds one Runtime (ONNX Runtime sessions, providers with fallback) for its life and
takes whole chunks, one at a time. Each chunk starts from a fresh background model and burst
context, primed by the chunk's warm-up frames, so its decisions do not depend on which actor
takes it or what that actor did before. Within a chunk, frames go through `Scorer.score` and
`decide_all` in batches in capture order, exactly as `edge watch` feeds them.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from edge.background import CameraBackgrounds
from edge.batch.listing import Chunk, Listed
from edge.batch.shards import record_to_json, write_shard
from edge.bundle import load_bundle
from edge.decide import Bursts, decide_batch
from edge.decode import decode_frame
from edge.hashing import file_sha256
from edge.loader import Taken
from edge.preprocess import CROP_RATIO
from edge.results import FrameRecord
from edge.runtime import Runtime
from edge.scorer import Scorer
from edge.triage import BURST_FRAMES

# per frame: (image or None, width, height, sha256 or None, failure or None)
Decoded = tuple[np.ndarray | None, int | None, int | None, str | None, str | None]


def decode_many(root: str, relpaths: Sequence[str], min_side: int | None) -> list[Decoded]:
    """Decode frames as `edge watch` does (reduced JPEG scale, never below `min_side`)."""
    out: list[Decoded] = []
    for rel in relpaths:
        path = Path(root) / rel
        digest = None
        try:
            digest = file_sha256(path)  # streamed, not the whole file in memory
            image, width, height = decode_frame(path, min_side=min_side)
        except Exception as e:  # noqa: BLE001 - any unreadable frame is a failure, not a crash
            reason = str(e) if getattr(e, "args", None) else type(e).__name__
            out.append((None, None, None, digest, reason))
            continue
        out.append((image, width, height, digest, None))
    return out


@dataclass
class ChunkOptions:
    """What every actor needs to score like `edge watch` (plain data: it travels to them)."""

    bundle: str
    root: str
    shard_dir: str
    thresholds: dict[str, float]
    burst_gap: float = 10.0
    burst_frames: int = BURST_FRAMES
    batch: int = 16
    threads: int | None = 1
    providers: list[str] | None = None
    measure: str = "energy"
    lookahead: int = 2  # decode batches in flight ahead of the one being scored
    decode_cpus: float = 0.5


class ChunkScorer:
    """Scores chunks with one Runtime; `decode` runs `decode_many` (here in this process)."""

    def __init__(self, opts: ChunkOptions) -> None:
        self.opts = opts
        bundle = load_bundle(opts.bundle)
        self.manifest = bundle.manifest
        self.runtime = Runtime.from_bundle(bundle, providers=opts.providers, threads=opts.threads)
        m = self.manifest
        self.min_side = math.ceil(
            max(*m.classifier.input.size, *m.segmenter.input.size) / CROP_RATIO
        )

    def decode_batches(self, batches: list[list[str]]) -> Iterator[list[Decoded]]:
        for rels in batches:
            yield decode_many(self.opts.root, rels, self.min_side)

    def run_chunk(self, chunk: Chunk) -> list[dict[str, Any]]:
        """The chunk's frame lines (warm-up frames scored, not returned), in capture order."""
        opts = self.opts
        scorer = Scorer(
            self.runtime, self.manifest, backgrounds=CameraBackgrounds(), measure=opts.measure
        )
        recent = Bursts(opts.burst_frames)
        items = [*chunk.warmup, *chunk.frames]
        n_warm = len(chunk.warmup)
        step = max(1, opts.batch)
        groups = [items[i : i + step] for i in range(0, len(items), step)]
        lines: list[dict[str, Any]] = []
        decoded = self.decode_batches([[f.relpath for f in g] for g in groups])
        for g, (group, results) in enumerate(zip(groups, decoded, strict=True)):
            records = self._decide(group, results, scorer, recent)
            for k, (frame, record) in enumerate(zip(group, records, strict=True)):
                if g * step + k >= n_warm:
                    lines.append(record_to_json(record, frame.size, frame.mtime_ns))
        return lines

    def _decide(
        self, group: list[Listed], results: list[Decoded], scorer: Scorer, recent: Bursts
    ) -> list[FrameRecord]:
        """One batch as the watcher decides it (edge.loop.Pipeline): score, triage by
        edge.decide.decide_batch with the camera's last frames as the bursts' context, then
        the background models learn."""
        opts = self.opts
        times = [datetime.fromisoformat(f.time) if f.time else None for f in group]
        ok = [i for i, r in enumerate(results) if r[0] is not None]
        records: list[FrameRecord | None] = [None] * len(group)
        for i, (_img, _w, _h, digest, failure) in enumerate(results):
            if failure is not None:
                f = group[i]
                records[i] = FrameRecord(
                    relpath=f.relpath,
                    camera=f.camera,
                    sha256=digest,
                    timestamp=times[i],
                    time_source=f.time_source,
                    decision="quarantine",
                    failure=failure,
                )
        if ok:
            images = [results[i][0] for i in ok]
            cameras = [group[i].camera for i in ok]
            scored = scorer.score(images, cameras)  # type: ignore[arg-type]
            taken = [
                Taken(
                    Path(group[i].relpath),
                    times[i],
                    group[i].time_source,
                    results[i][1],
                    results[i][2],
                )
                for i in ok
            ]
            decisions, evidence = decide_batch(
                cameras,
                taken,
                scored,
                opts.thresholds,
                burst_gap=opts.burst_gap,
                burst_frames=opts.burst_frames,
                earlier=recent.earlier(cameras),
            )
            recent.add(evidence, opts.burst_gap)
            scorer.learn(images, cameras, scored)  # type: ignore[arg-type]
            for i, d in zip(ok, decisions, strict=True):
                f, (_img, width, height, digest, _fail) = group[i], results[i]
                records[i] = FrameRecord(
                    relpath=f.relpath,
                    camera=f.camera,
                    sha256=digest,
                    timestamp=times[i],
                    time_source=f.time_source,
                    width=width,
                    height=height,
                    label=d.label,
                    class_index=d.class_index,
                    softmax=d.softmax,
                    overmap=d.overmap,
                    confidence=d.confidence,
                    decision=d.decision,
                )
        return [r for r in records if r is not None]

    def write(self, chunk: Chunk) -> dict[str, Any]:
        """Run a chunk and write its shard; a summary line for the driver."""
        lines = self.run_chunk(chunk)
        write_shard(Path(self.opts.shard_dir), chunk.id, lines)
        failures = sum(1 for line in lines if line["record"]["failure"] is not None)
        return {
            "chunk": chunk.id,
            "frames": len(lines),
            "failures": failures,
            "provider": self.runtime.providers.get("classifier", "?"),
        }


class ChunkWorker(ChunkScorer):
    """The actor class for Ray Data's `map_batches`: a batch is a few chunks (column
    "chunk", each a Chunk's JSON), done one after the other; frames decoded in Ray tasks,
    `lookahead` batches ahead of the scoring."""

    def __init__(self, opts: ChunkOptions) -> None:
        import ray

        super().__init__(opts)
        self._ray = ray
        self._decode: Callable[..., Any] = ray.remote(num_cpus=opts.decode_cpus)(decode_many)

    def decode_batches(self, batches: list[list[str]]) -> Iterator[list[Decoded]]:
        ahead = max(1, self.opts.lookahead + 1)
        pending: deque[Any] = deque()
        todo = iter(batches)
        for rels in todo:
            pending.append(self._decode.remote(self.opts.root, rels, self.min_side))
            if len(pending) >= ahead:
                break
        while pending:
            result = self._ray.get(pending.popleft())
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(self._decode.remote(self.opts.root, nxt, self.min_side))
            yield result

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        rows = [self.write(Chunk.from_json(str(text))) for text in batch["chunk"]]
        return {k: [r[k] for r in rows] for k in ("chunk", "frames", "failures", "provider")}
