"""An OUT folder for the review tests, made by the real watcher on real camera-trap frames.

Six frames of camera S90 (EXIF times: two bursts of three) and three of camera CA01 (no EXIF;
file times an hour apart: three bursts of one). Thresholds that no frame can reach keep every
frame for review, so the whole queue is real watcher output: journal rows, files in
OUT/review, sidecars and overlays.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import pytest

from edge.bundle import load_bundle
from edge.journal import Journal
from edge.tui import Stats
from edge.watch import WatchOptions, run_once

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "camtrap"
PERU = DATA / "peru_s90_animl" / "S90_SDZG1"
CA01 = DATA / "mlwic_examples" / "CA-01"
ALL_REVIEW = {"tag": 1.0, "empty": 1.0, "empty_foreground": 0.0}  # the highest bars


def build_out(bundle: Path, root: Path) -> Path:
    """Run `edge watch --once` (run_once) on nine real frames; returns OUT."""
    if not PERU.is_dir() or not CA01.is_dir():
        pytest.skip(f"reference data missing: {DATA}")
    inbox, out = root / "inbox", root / "out"
    (inbox / "S90").mkdir(parents=True)
    (inbox / "CA01").mkdir()
    for p in sorted(PERU.iterdir())[:6]:
        shutil.copy2(p, inbox / "S90" / p.name)
    for k, p in enumerate(sorted(CA01.iterdir())[:3]):
        dst = inbox / "CA01" / p.name
        shutil.copy(p, dst)
        os.utime(dst, (1.7e9 + 3600 * k, 1.7e9 + 3600 * k))
    opts = WatchOptions(
        inbox=inbox, out=out, thresholds=ALL_REVIEW, settle=0.1, give_up=2.0, batch=4
    )
    run_once(load_bundle(bundle), opts, Stats(out=out))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def copy_out(template: Path, dst: Path) -> Path:
    """A fresh copy of a built OUT (the journal is closed: nothing in flight)."""
    shutil.copytree(template, dst, symlinks=True)
    return dst


def frames_by_name(out: Path) -> dict[str, int]:
    """relpath's file name -> journal id."""
    with Journal.open(out) as j:
        return {f.relpath.rsplit("/", 1)[-1]: f.id for f in j.frames()}


def files_under(out: Path, folder: str) -> set[str]:
    """The frames (not sidecars) under OUT/folder, relative to OUT."""
    return {
        p.relative_to(out).as_posix()
        for p in (out / folder).rglob("*")
        if p.is_file() and p.suffix.lower() in (".jpg", ".jpeg")
    }


def sidecar_of(path: Path) -> dict:
    return json.loads(path.with_name(path.name + ".json").read_text(encoding="utf-8"))
