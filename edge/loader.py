"""The load and infer stages: a batch of inbox paths -> decoded frames, their capture times and
sizes, and the bundle's outputs.

Neither stage has side effects, so both may run ahead of the frames being decided: `ahead`
starts a batch in two threads of its own (a loader decodes batch N+2 while the models run on
batch N+1 and the calling thread decides batch N); `get` hands a batch over, from what was
started ahead or loaded there and then. Everything with state (bursts, background models,
counters) stays with the caller, in order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from edge.decode import DecodeError, decode_frame
from edge.exif import when_taken
from edge.preprocess import CROP_RATIO
from edge.runtime import Outputs, Prepared, Runtime

MAX_AHEAD = 8  # batches started ahead and not asked for, at most (memory stays bounded)


@dataclass(frozen=True)
class Taken:
    """What is known of a decoded frame besides its pixels."""

    path: Path
    time: datetime | None
    time_source: str | None  # "exif", "file" (modification time) or None
    width: int  # of the original frame, not of its reduced decode
    height: int


@dataclass
class Loaded:
    """A batch read from disk and run through the models."""

    paths: list[Path]
    failed: dict[int, str]  # paths[i] could not be decoded: i -> why (quarantine)
    denied: dict[int, str]  # paths[i] may not be read (permission): left pending, i -> why
    index: list[int]  # images[k] is paths[index[k]]
    images: list[np.ndarray]
    taken: list[Taken]  # taken[k] goes with images[k]
    views: np.ndarray | None  # the classifier's uint8 views, [K, H, W, 3]
    outputs: Outputs | None  # None when no frame decoded


def min_side(runtime: Runtime) -> int:
    """The smallest short side a frame is decoded at: what the models' views need, so a big
    JPEG is decoded at a reduced DCT scale (a 12 MP frame at 1/4 or 1/8 of its pixels)."""
    m = runtime.bundle.manifest
    return math.ceil(max(*m.classifier.input.size, *m.segmenter.input.size) / CROP_RATIO)


def read(paths: Sequence[Path], runtime: Runtime, smallest: int) -> tuple[Loaded, list[Prepared]]:
    """Decode each frame (reduced, never below `smallest`), read its capture time, and make the
    models' inputs in chunks of the runtime's largest batch."""
    failed, denied, index, images, taken = {}, {}, [], [], []
    for i, p in enumerate(paths):
        try:
            image, width, height = decode_frame(p, min_side=smallest)
        except DecodeError as e:
            # a mode that changed since the frame was journaled is no fault of the frame's
            (denied if isinstance(e.__cause__, PermissionError) else failed)[i] = str(e)
            continue
        t, source = when_taken(p)
        index.append(i)
        images.append(image)
        taken.append(Taken(p, t, source, width, height))
    step = runtime.max_batch
    prepared = [runtime.prepare(images[i : i + step]) for i in range(0, len(images), step)]
    views = np.concatenate([b.views for b in prepared]) if prepared else None
    return Loaded(list(paths), failed, denied, index, images, taken, views, None), prepared


def infer(loaded: Loaded, prepared: Sequence[Prepared], runtime: Runtime) -> Loaded:
    """The bundle's outputs for a read batch (the one stage that needs the models)."""
    if prepared:
        loaded.outputs = Outputs.join([runtime.infer(b) for b in prepared])
    return loaded


class Loader:
    """`read` then `infer`, started ahead in two threads; use as a context manager."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.smallest = min_side(runtime)
        self._read = ThreadPoolExecutor(1, thread_name_prefix="edge-load")
        self._infer = ThreadPoolExecutor(1, thread_name_prefix="edge-infer")
        self._ahead: dict[tuple[Path, ...], Future[Loaded]] = {}

    def __enter__(self) -> Loader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._ahead.clear()
        self._read.shutdown(wait=True, cancel_futures=True)
        self._infer.shutdown(wait=True, cancel_futures=True)

    def ahead(self, paths: list[Path]) -> None:
        """Start reading and inferring a batch that `get` will be asked for soon (a hint)."""
        key = tuple(paths)
        if key not in self._ahead:
            done = self._read.submit(read, paths, self.runtime, self.smallest)
            self._ahead[key] = self._infer.submit(lambda: infer(*done.result(), self.runtime))

    def get(self, paths: list[Path]) -> Loaded:
        """The batch, loaded and inferred (from `ahead`'s work when it was started there)."""
        started = self._ahead.pop(tuple(paths), None)
        # a batch announced but never asked for (a frame of it vanished meanwhile) is dropped
        # once a few newer ones wait
        for key in list(self._ahead)[: max(0, len(self._ahead) - MAX_AHEAD)]:
            self._ahead.pop(key)
        if started is not None:
            return started.result()
        return infer(*read(paths, self.runtime, self.smallest), self.runtime)
