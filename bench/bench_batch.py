"""`edge batch` on this machine (a Ray started for the run, 1 and 2 workers) against
`edge watch --once`, side by side in one run on the same real camera-trap frames.

    .venv/bin/python bench/bench_batch.py [--bundle DIR] [--per-camera 48] [--rounds 1]

Four cameras (Peru S90 SDZG1 and SDZG2 at 768x576, MLWIC CA-01 split in two at 256x256),
`--per-camera` frames each. Each command runs as a user runs it, in a fresh process on a
fresh OUT (`edge watch --copy --once --no-tui`; `edge batch --workers N`), so the figures
include starting: Ray's own start, the model sessions in every actor. "work" is the batch
run's own phase of decoding, scoring and writing shards (what grows with the frames), beside
the watcher's whole run. Rounds rotate the order so a noisy shared machine slows all alike.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import cores, cpu_model, load_avg

ROOT = Path(__file__).resolve().parents[1]
CAMTRAP = ROOT.parent / "shared" / "data" / "camtrap"
CAMERAS = {
    "S90_SDZG1": (CAMTRAP / "peru_s90_animl" / "S90_SDZG1", 0),
    "S90_SDZG2": (CAMTRAP / "peru_s90_animl" / "S90_SDZG2", 0),
    "CA01_a": (CAMTRAP / "mlwic_examples" / "CA-01", 0),
    "CA01_b": (CAMTRAP / "mlwic_examples" / "CA-01", 1),
}
EDGE = Path(sys.executable).parent / "edge"


def fill(inbox: Path, per_camera: int) -> int:
    n = 0
    for name, (src, part) in CAMERAS.items():
        frames = sorted(p for p in src.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
        take = frames[part * per_camera : (part + 1) * per_camera]
        (inbox / name).mkdir(parents=True)
        for p in take:
            shutil.copy2(p, inbox / name / p.name)
        n += len(take)
    return n


def run(cmd: list[str]) -> tuple[float, str]:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    t0 = time.monotonic()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.monotonic() - t0
    if done.returncode != 0:
        raise SystemExit(
            f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr[-3000:]}"
        )
    return wall, done.stdout + done.stderr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=ROOT / "edge" / "default_bundle")
    ap.add_argument("--per-camera", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    try:
        inbox = tmp / "inbox"
        n = fill(inbox, args.per_camera)
        runs = {
            "watch --once": lambda out: [
                str(EDGE),
                "watch",
                str(inbox),
                "--out",
                str(out),
                "--bundle",
                str(args.bundle),
                "--copy",
                "--once",
                "--no-tui",
            ],
            "batch, 1 worker": lambda out: [
                str(EDGE),
                "batch",
                str(inbox),
                "--out",
                str(out),
                "--bundle",
                str(args.bundle),
                "--workers",
                "1",
            ],
            "batch, 2 workers": lambda out: [
                str(EDGE),
                "batch",
                str(inbox),
                "--out",
                str(out),
                "--bundle",
                str(args.bundle),
                "--workers",
                "2",
            ],
        }
        walls: dict[str, list[float]] = {k: [] for k in runs}
        work: dict[str, list[float]] = {k: [] for k in runs}
        names = list(runs)
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                out = tmp / f"out-{r}-{names.index(name)}"
                wall, text = run(runs[name](out))
                walls[name].append(wall)
                m = re.search(r"chunks ([\d.]+)", text)
                work[name].append(float(m.group(1)) if m else wall)
                shutil.rmtree(out, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    import onnxruntime
    import ray

    print(f"machine: {cpu_model()}, {cores()} cores, load avg {load_avg()} (at the end)")
    print(
        f"python {platform.python_version()}, onnxruntime {onnxruntime.__version__}, "
        f"ray {ray.__version__}; bundle {args.bundle}"
    )
    print(
        f"{n} frames, {len(CAMERAS)} cameras; median of {args.rounds} round(s), each command "
        "a fresh process on a fresh OUT\n"
    )
    base = statistics.median(walls["watch --once"])
    print(f"{'':<18}{'wall s':>9}{'frames/s':>10}{'vs watch':>10}{'work s':>9}{'work f/s':>10}")
    for name in runs:
        w, k = statistics.median(walls[name]), statistics.median(work[name])
        print(f"{name:<18}{w:>9.1f}{n / w:>10.1f}{base / w:>9.2f}x{k:>9.1f}{n / k:>10.1f}")
    print(
        "\nwork: for batch, the phase that decodes, scores and writes shards (no Ray start, "
        "listing, capture times or merge); for watch, its whole run"
    )


if __name__ == "__main__":
    main()
