"""What a new user of `edge watch` trips over: stopping, frame order, sizes, messages, logs, the
dashboard. Real frames, a real bundle, real folders and journals, the real command."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import piexif
from PIL import Image

from edge.bundle import load_bundle
from edge.journal import Journal
from edge.tui import Stats
from edge.watch import WatchOptions, run_once

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
CA01 = DATA / "camtrap" / "mlwic_examples" / "CA-01"
PERU = DATA / "camtrap" / "peru_s90_animl" / "S90_SDZG1"
RESULTS = Path("results") / "megadetector.json"


def options(inbox: Path, out: Path, **kw) -> WatchOptions:
    base = dict(inbox=inbox, out=out, thresholds={"tag": 0.6, "empty": 0.8,
                                                   "empty_foreground": 0.02},
                settle=0.1, give_up=2.0, batch=4)
    return WatchOptions(**{**base, **kw})


def results(out: Path) -> dict[str, dict]:
    return {im["file"]: im for im in json.loads((out / RESULTS).read_text())["images"]}


def test_the_results_give_the_original_frame_size_not_the_reduced_decode(tiny_bundle: Path,
                                                                         tmp_path: Path):
    """A small model's frames are decoded at 1/4 scale; the results say how big the frame is,
    turned as the camera's EXIF orientation says."""
    inbox, out = tmp_path / "in", tmp_path / "out"
    (inbox / "S90").mkdir(parents=True)
    src = sorted(PERU.glob("*.JPG"))[0]
    shutil.copy(src, inbox / "S90" / "level.jpg")
    turned = shutil.copy(src, inbox / "S90" / "turned.jpg")
    piexif.insert(piexif.dump({"0th": {piexif.ImageIFD.Orientation: 6}}), str(turned))
    with Image.open(src) as im:
        width, height = im.size
    run_once(load_bundle(tiny_bundle), options(inbox, out), Stats(out=out))
    with Journal.open(out) as j:
        rows = {f.relpath: f for f in j.frames()}
    got = {Path(f).name: (im["width"], im["height"]) for f, im in results(out).items()}
    assert got == {"level.jpg": (width, height), "turned.jpg": (height, width)}
    assert {(f.extra["width"], f.extra["height"]) for f in rows.values()} == {
        (width, height), (height, width)}


def test_once_takes_each_cameras_frames_in_the_order_they_were_taken(tiny_bundle: Path,
                                                                    tmp_path: Path):
    """Names and directory order say nothing: one camera's frames carry EXIF times in a
    shuffled order, another's have no EXIF and only their files' times; each camera's frames
    are journaled (and so decided, bursts and background models fed) in capture order."""
    import random
    from datetime import datetime, timedelta

    import cv2

    inbox, out = tmp_path / "in", tmp_path / "out"
    (inbox / "exif").mkdir(parents=True)
    (inbox / "plain").mkdir()
    rng = random.Random(7)
    start = datetime(2024, 3, 1, 6, 0, 0)
    minutes = rng.sample(range(1, 500), 10)
    for i, (src, m) in enumerate(zip(sorted(CA01.iterdir())[:10], minutes, strict=True)):
        dst = shutil.copy(src, inbox / "exif" / f"IMG_{i:04d}.JPG")
        stamp = (start + timedelta(minutes=m)).strftime("%Y:%m:%d %H:%M:%S").encode()
        piexif.insert(piexif.dump({"Exif": {piexif.ExifIFD.DateTimeOriginal: stamp}}), str(dst))
    seconds = rng.sample(range(1, 5000), 6)
    for i, (src, s) in enumerate(zip(sorted(PERU.glob("*.JPG"))[:6], seconds, strict=True)):
        ok, data = cv2.imencode(".jpg", cv2.imread(str(src)))  # re-encoded: no EXIF block
        dst = inbox / "plain" / f"frame{i}.jpg"
        dst.write_bytes(data.tobytes())
        os.utime(dst, (1_700_000_000 + s, 1_700_000_000 + s))
    run_once(load_bundle(tiny_bundle), options(inbox, out, copy=True), Stats(out=out))
    with Journal.open(out) as j:
        rows = j.frames()  # in journal order: the order they were admitted and decided
    assert len(rows) == 16
    for camera, source in (("exif", "exif"), ("plain", "file")):
        mine = [f for f in rows if f.camera == camera]
        times = [f.extra["time"] for f in mine]
        assert {f.extra["time_source"] for f in mine} == {source}
        assert times == sorted(times) and len(set(times)) == len(times)
    # and not by chance: the names' order is another order
    names = [f.relpath for f in rows if f.camera == "exif"]
    assert names != sorted(names)
