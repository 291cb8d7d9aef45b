"""A chunk's results on disk: one JSON-lines shard per chunk, written whole or not at all.

    OUT/batch/shards/<chunk id>.jsonl    {"chunk": id, "frames": n}, then n frame lines

A shard is written to a temporary name, fsynced and renamed, so a killed run leaves either
no shard or a complete one (and stray temporaries, ignored and removed by the next run). The
header's count is checked on reading: a shard that does not hold what it says is not complete,
and its chunk is done again. A frame line carries its listing key (path, size, mtime), which
the merge matches against the current listing.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, fields
from datetime import datetime
from pathlib import Path
from typing import Any

from edge.durable import fsync_dir
from edge.results import FrameRecord

SHARDS = "batch/shards"
_TIMES = ("timestamp", "classified_at")


def shard_path(shard_dir: Path, chunk_id: str) -> Path:
    return shard_dir / f"{chunk_id}.jsonl"


def record_to_json(record: FrameRecord, size: int, mtime_ns: int) -> dict[str, Any]:
    d = asdict(record)
    for k in _TIMES:
        if d[k] is not None:
            d[k] = d[k].isoformat()
    d["boxes"] = [list(b) for b in record.boxes]
    d["top"] = [list(t) for t in record.top]
    return {"size": size, "mtime_ns": mtime_ns, "record": d}


def record_from_json(d: dict[str, Any]) -> tuple[tuple[str, int, int], FrameRecord]:
    """((relpath, size, mtime_ns), the record) from one frame line."""
    r = dict(d["record"])
    for k in _TIMES:
        if r.get(k):
            r[k] = datetime.fromisoformat(r[k])
    r["boxes"] = tuple(tuple(b) for b in r.get("boxes", ()))
    r["top"] = tuple((int(i), float(p)) for i, p in r.get("top", ()))
    known = {f.name for f in fields(FrameRecord)}
    record = FrameRecord(**{k: v for k, v in r.items() if k in known})
    return (record.relpath, int(d["size"]), int(d["mtime_ns"])), record


def write_shard(shard_dir: Path, chunk_id: str, lines: list[dict[str, Any]]) -> Path:
    """Write a chunk's frame lines atomically (tmp + fsync + rename); return the shard."""
    shard_dir.mkdir(parents=True, exist_ok=True)
    path = shard_path(shard_dir, chunk_id)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps({"chunk": chunk_id, "frames": len(lines)}) + "\n")
            for line in lines:
                f.write(json.dumps(line, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(shard_dir)
    return path


def read_shard(path: Path) -> list[dict[str, Any]] | None:
    """The frame lines of a complete shard; None when it is missing, torn or short."""
    try:
        text = path.read_text(encoding="utf-8")
        header, *rest = text.splitlines()
        head = json.loads(header)
        lines = [json.loads(line) for line in rest if line]
    except (OSError, ValueError):
        return None
    if head.get("chunk") != path.stem or head.get("frames") != len(lines):
        return None
    return lines


def is_complete(shard_dir: Path, chunk_id: str) -> bool:
    return read_shard(shard_path(shard_dir, chunk_id)) is not None


def clean_temps(shard_dir: Path) -> int:
    """Remove the temporaries a killed run left; returns how many."""
    n = 0
    for p in shard_dir.glob(".*.tmp") if shard_dir.is_dir() else ():
        p.unlink(missing_ok=True)
        n += 1
    return n
