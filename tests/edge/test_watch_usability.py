"""What a new user of `edge watch` trips over: stopping, frame order, sizes, messages, logs, the
dashboard. Real frames, a real bundle, real folders and journals, the real command."""

from __future__ import annotations

import json
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
