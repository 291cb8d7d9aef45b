"""The per-camera background model's cost per frame, beside a plain copy of the same maths
(HWC frames, descriptors stacked per call, np.median, broadcasting over [K,S,S,3]: the way
edge/background.py computed it before it was made fast), on the same real frames, in
interleaved rounds.

    .venv/bin/python bench/bench_background.py [--memory 120] [--frames 100] [--rounds 5]
        [--size 128] [--neighbours 5]

Each round and each model: learn the first --memory MLWIC CA-01 frames ("update (cold)": it
builds each frame's entry), then for each of the next --frames frames ask foreground (it builds
the frame's entry) and learn the frame ("update (after fg)": it reuses that entry), so the
memory grows from --memory to --memory + --frames frames (the latest 200 kept, the default
max_frames). Prints ms/frame, median of the rounds (and the spread), the ratio, the largest
difference between the two models' foregrounds, and the bytes each holds at the end.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import deque
from pathlib import Path

import cv2
import numpy as np
from machine import cores, cpu_model, load_avg

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


class Plain:
    """edge.background.BackgroundModel's maths written plainly (default thresholds)."""

    def __init__(self, size: int, neighbours: int, max_frames: int = 200) -> None:
        from edge.background import image_mode

        self.mode = image_mode  # day colour or night IR, as the model chooses
        self.size, self.neighbours = size, neighbours
        self.mems: dict[str, deque[tuple[np.ndarray, np.ndarray]]] = {
            "colour": deque(maxlen=max_frames),
            "ir": deque(maxlen=max_frames),
        }
        self.last: tuple[np.ndarray, tuple[np.ndarray, np.ndarray]] | None = None

    def entry(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.last is not None and self.last[0] is image:
            return self.last[1]
        small = cv2.resize(image, (self.size, self.size), interpolation=cv2.INTER_AREA)
        frame = cv2.GaussianBlur(small.astype(np.float32), (3, 3), 0)
        desc = cv2.resize(small, (16, 16), interpolation=cv2.INTER_AREA)
        self.last = (image, (frame, desc.astype(np.float32).ravel()))
        return self.last[1]

    def update(self, image: np.ndarray) -> None:
        self.mems[self.mode(image)].append(self.entry(image))

    def foreground(self, image: np.ndarray) -> np.ndarray:
        from edge.background import _median0  # the same min/max network as before

        mem = self.mems[self.mode(image)]
        frame, desc = self.entry(image)
        dist = ((np.stack([d for _, d in mem]) - desc) ** 2).sum(axis=1)
        order = [i for i in np.argsort(dist, kind="stable") if dist[i] > 0]
        idx = order[: self.neighbours] or [int(np.argmin(dist))]
        stack = np.stack([mem[i][0] for i in idx])  # [K,S,S,3]
        ratio = (frame[None, ::4, ::4] + 1.0) / (stack[:, ::4, ::4] + 1.0)
        stack *= np.median(ratio.reshape(len(idx), -1, 3), axis=1)[:, None, None, :]
        bg = _median0(stack)
        sigma = 1.4826 * _median0(np.abs(stack - bg)).max(axis=-1)
        z = np.abs(frame - bg).max(axis=-1) / np.maximum(sigma, 6.0)
        fg = np.clip((z - 3.0) / 3.0, 0.0, 1.0).astype(np.float32)
        fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
        return np.clip(fg, 0.0, 1.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--memory", type=int, default=120, help="frames learnt before asking")
    ap.add_argument("--frames", type=int, default=100, help="frames asked (and then learnt)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--size", type=int, default=128, help="working size (square)")
    ap.add_argument("--neighbours", type=int, default=5)
    args = ap.parse_args()

    from edge.background import BackgroundModel
    from edge.decode import load_image

    if args.memory < 10:
        raise SystemExit("--memory must be at least 10, the models' min_frames")
    files = sorted((SHARED / "camtrap/mlwic_examples/CA-01").glob("*.jpg"))
    files = files[: args.memory + args.frames]
    if len(files) < args.memory + args.frames:
        raise SystemExit(f"need {args.memory + args.frames} frames, found {len(files)}")
    images = [load_image(p) for p in files]
    warm, asked = images[: args.memory], images[args.memory :]
    size, k = args.size, args.neighbours
    models = {
        "BackgroundModel": lambda: BackgroundModel(size=(size, size), neighbours=k),
        "plain maths": lambda: Plain(size, k),
    }
    times: dict[str, dict[str, list[float]]] = {
        name: {"update (cold)": [], "foreground": [], "update (after fg)": []} for name in models
    }
    outputs: dict[str, list[np.ndarray]] = {}
    held: dict[str, tuple[int, int]] = {}  # bytes and frames held after round 0
    for r in range(args.rounds + 1):  # round 0 warms up and keeps the outputs
        for name in list(models)[r % 2 :] + list(models)[: r % 2]:
            model = models[name]()
            t = time.perf_counter()
            for im in warm:
                model.update(im)
            cold = time.perf_counter() - t
            fg_s = up_s = 0.0
            fgs = []
            for im in asked:
                t0 = time.perf_counter()
                fgs.append(model.foreground(im))
                t1 = time.perf_counter()
                model.update(im)
                fg_s += t1 - t0
                up_s += time.perf_counter() - t1
            if r == 0:
                outputs[name] = fgs
                held[name] = memory(model)
                continue
            ms = times[name]
            ms["update (cold)"].append(1e3 * cold / len(warm))
            ms["foreground"].append(1e3 * fg_s / len(asked))
            ms["update (after fg)"].append(1e3 * up_s / len(asked))

    print(f"machine: {cpu_model()}, {cores()} cores, load avg {load_avg()}")
    print(
        f"numpy {np.__version__}, opencv {cv2.__version__}; MLWIC CA-01 {images[0].shape}, "
        f"working size {size}x{size}, {k} neighbours, memory {args.memory} frames then "
        f"{args.frames} more (max_frames 200), median of {args.rounds} interleaved rounds"
    )
    fast, plain = times.values()
    for what in fast:
        f, p = statistics.median(fast[what]), statistics.median(plain[what])
        print(
            f"  {what:19s} ms/frame: BackgroundModel {f:6.3f} ({min(fast[what]):.3f}.."
            f"{max(fast[what]):.3f})   plain {p:6.3f} ({min(plain[what]):.3f}.."
            f"{max(plain[what]):.3f})   plain/fast {p / f:5.1f}x"
        )
    f, p = (
        sum(statistics.median(t[w]) for w in ("foreground", "update (after fg)"))
        for t in (fast, plain)
    )
    print(
        f"  {'foreground + update':19s} ms/frame: BackgroundModel {f:6.3f}   plain {p:6.3f}"
        f"   plain/fast {p / f:5.1f}x"
    )
    diff = max(float(np.abs(a - b).max()) for a, b in zip(*outputs.values(), strict=True))
    print(f"max |foreground BackgroundModel - plain| over {len(asked)} frames: {diff:.3g}")
    print(
        "memory held at the end: "
        + ",   ".join(
            f"{name} {b / 2**20:.1f} MB for {n} frames ({b / n / 1e3:.0f} KB/frame)"
            for name, (b, n) in held.items()
        )
    )


def memory(model: object) -> tuple[int, int]:
    """(bytes, frames) a model holds: BackgroundModel's own count; the plain copy's arrays."""
    if isinstance(model, Plain):
        entries = [e for mem in model.mems.values() for e in mem]
        return sum(f.nbytes + d.nbytes for f, d in entries), len(entries)
    return model.nbytes, sum(model.state().values())  # type: ignore[attr-defined]


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
