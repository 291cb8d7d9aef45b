"""Shards -> one MegaDetector results file (and, on request, Camtrap DP and a sorted copy).

The merge is driven by the current listing: each listed frame takes the record whose key
(path, size, mtime) matches it, from whichever shard holds it. So a frame written by two
shards (a chunk redone after a kill, or cut differently after the inbox changed) is in the
results once, and a record of a file that changed or went since is never used.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Literal

from edge.batch.listing import Chunk, Listed
from edge.batch.shards import read_shard, record_from_json, shard_path
from edge.durable import make_dirs
from edge.results import BundleInfo, FrameRecord, write_md_results

MD_RESULTS = "results/megadetector.json"
MD_SORTED = "results/megadetector-sorted.json"
Place = Literal["copy", "hard", "sym"]


def merge(
    shard_dir: Path, chunks: Sequence[Chunk], extra_shards: Iterable[Path] = ()
) -> tuple[list[FrameRecord], list[Listed]]:
    """(records in capture order, frames no complete shard holds). `extra_shards`: other
    shards to take matching records from (a run cut into other chunks before)."""
    found: dict[tuple[str, int, int], FrameRecord] = {}
    paths = [shard_path(shard_dir, c.id) for c in chunks]
    for path in [*paths, *extra_shards]:
        for line in read_shard(path) or ():
            key, record = record_from_json(line)
            found.setdefault(key, record)
    records, missing = [], []
    for chunk in chunks:
        for f in chunk.frames:
            r = found.get(f.key)
            if r is None:
                missing.append(f)
            else:
                records.append(r)
    return records, missing


def place(records: Sequence[FrameRecord], root: Path, out: Path, how: Place) -> list[FrameRecord]:
    """A sorted view of the frames under OUT/<decision>/<path>: copies (`copy`, written to a
    temporary name, then renamed) or links (`hard`, `sym`). The originals are never moved.
    Returns the records with `dest` set; a destination already there is kept as it is."""
    placed = []
    for r in records:
        dest = f"{r.decision or 'quarantine'}/{r.relpath}"
        target, source = out / dest, root / r.relpath
        if not target.exists() and not target.is_symlink():
            make_dirs(target.parent, durable=False)
            if how == "copy":
                tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
                shutil.copy2(source, tmp)
                tmp.replace(target)
            elif how == "hard":
                os.link(source, target)
            else:
                target.symlink_to(source.resolve())
        placed.append(replace(r, dest=dest))
    return placed


def write_results(
    out: Path,
    records: Sequence[FrameRecord],
    bundle: BundleInfo,
    thresholds: dict[str, float],
    *,
    sorted_view: bool = False,
) -> list[Path]:
    """OUT/results/megadetector.json with paths under the input root (the originals); with a
    sorted view also megadetector-sorted.json, paths under OUT."""
    written = [
        write_md_results(
            out / MD_RESULTS, records, bundle=bundle, thresholds=thresholds, paths="relpath"
        )
    ]
    if sorted_view:
        written.append(
            write_md_results(
                out / MD_SORTED, records, bundle=bundle, thresholds=thresholds, paths="dest"
            )
        )
    return written
