"""Review overlays drawn when someone asks: the watcher keeps what a picture needs in the
journal (edge.overlay.pack_overlay); `ensure_overlay` draws it once into OUT/overlays and tells
the journal, the page serves it, `edge overlays OUT` draws every one still missing. A real
journal, real frames, the real app and command."""

from __future__ import annotations

import errno
import hashlib
import logging
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from edge.bundle import InputSpec
from edge.cli import app as cli
from edge.decode import decode_frame
from edge.journal import Decision, Frame, Journal
from edge.overlay import draw_overlay, ensure_overlay, pack_overlay

from .review_helpers import CA01, PERU

SPEC = InputSpec(size=(224, 224), mean=(127.0,) * 3, std=(128.0,) * 3, resize="center_crop")
TEXT = {"label": "animal  (segmenter mask)", "scores": {"softmax": 0.61, "overmap": 0.33}}


def blob() -> bytes:
    cam = np.zeros((7, 7), np.float32)
    cam[2:4, 3:6] = 2.5
    yy, xx = np.mgrid[:224, :224]
    mask = np.hypot(xx - 120, yy - 100) < 60  # a bool mask at the model's size
    return pack_overlay(cam, mask, SPEC, **TEXT)


def add_frame(j: Journal, out: Path, src: Path, camera: str, data: bytes | None) -> int:
    """A frame the watcher kept for review: journaled seen, decided (with its overlay data) and
    done, its file at OUT/review/<camera>/<name>."""
    rel = f"{camera}/{src.name}"
    dest = f"review/{rel}"
    (out / dest).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, out / dest)
    st = src.stat()
    fid = j.record_seen(rel, st.st_size, st.st_mtime, hashlib.sha256(src.read_bytes()).hexdigest())
    j.record_decision(
        fid,
        Decision(
            "review", label="animal", softmax=0.61, overmap=0.33, confidence=0.5, overlay_data=data
        ),
        dest,
    )
    j.mark_done(fid, dest)
    return fid


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """OUT with three review frames: two with overlay data (Peru 768x576, MLWIC 256x256), one
    without."""
    if not PERU.is_dir() or not CA01.is_dir():
        pytest.skip("reference data missing")
    out = tmp_path / "out"
    out.mkdir()
    peru = sorted(PERU.iterdir())
    with Journal.open(out) as j:
        add_frame(j, out, peru[0], "S90", blob())
        add_frame(j, out, sorted(CA01.iterdir())[0], "CA01", blob())
        add_frame(j, out, peru[1], "S90", None)
    return out


def frame_named(j: Journal, name: str) -> Frame:
    return next(f for f in j.frames() if f.relpath.endswith(name))


def test_ensure_overlay_draws_once_and_tells_the_journal(out: Path):
    name = sorted(PERU.iterdir())[0].name
    with Journal.open(out) as j:
        f = frame_named(j, name)
        assert f.has_overlay_data and f.overlay is None
        path = ensure_overlay(j, out, f)
        rel = f"overlays/S90/{name}.overmap.jpg"
        assert path == (out / rel).resolve() and path.is_file()
        assert j.get(f.id).overlay == rel
        assert not list((out / "overlays").rglob("*.tmp"))
        picture = cv2.imread(str(path))[..., ::-1]
        image = decode_frame(out / f.dest, min_side=256).image
        want = draw_overlay(image, j.overlay_data(f.id))
        assert picture.shape == want.shape == (56 + 336, 448, 3)
        assert np.abs(picture.astype(int) - want).mean() < 3  # the same picture, as JPEG
        mtime = path.stat().st_mtime_ns
        assert ensure_overlay(j, out, j.get(f.id)) == path  # the journal's overlay
        assert ensure_overlay(j, out, f) == path  # a stale row: the journal is asked again
        assert path.stat().st_mtime_ns == mtime  # not drawn again
        # the file removed by hand: drawn again from the data
        path.unlink()
        assert ensure_overlay(j, out, j.get(f.id)) == path and path.is_file()


def test_nothing_to_draw_from_is_none(out: Path, caplog: pytest.LogCaptureFixture):
    peru = sorted(PERU.iterdir())
    with Journal.open(out) as j:
        bare = frame_named(j, peru[1].name)
        assert not bare.has_overlay_data and ensure_overlay(j, out, bare) is None
        gone = frame_named(j, peru[0].name)
        (out / gone.dest).unlink()
        assert ensure_overlay(j, out, gone) is None
        broken = frame_named(j, "CA01/" + sorted(CA01.iterdir())[0].name)
        (out / broken.dest).write_bytes(b"\xff\xd8 not a jpeg \xff\xd9")
        with caplog.at_level(logging.WARNING, logger="edge.overlay"):
            assert ensure_overlay(j, out, broken) is None
        assert "not drawn" in caplog.text
        assert not (out / "overlays").exists() or not any((out / "overlays").rglob("*.jpg"))
        assert all(f.overlay is None for f in j.frames())


def test_corrupt_overlay_data_is_none_and_logged(tmp_path: Path, caplog):
    if not PERU.is_dir():
        pytest.skip("reference data missing")
    out = tmp_path / "out"
    out.mkdir()
    with Journal.open(out) as j:
        fid = add_frame(j, out, sorted(PERU.iterdir())[0], "S90", blob()[:-10])
        with caplog.at_level(logging.WARNING, logger="edge.overlay"):
            assert ensure_overlay(j, out, j.get(fid)) is None
        assert "corrupt overlay data" in caplog.text


@pytest.fixture
def full_overlays(out: Path) -> Iterator[Path]:
    """OUT/overlays on a tmpfs of 64 KiB, filled to the last byte: a full disk, for real."""
    point = out / "overlays"
    point.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        try:
            with open(point / "filler.bin", "wb") as fh:
                while True:
                    fh.write(b"\xa5" * 4096)
                    fh.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC
        yield out
    finally:
        subprocess.run(["umount", "-l", str(point)], check=False)


def test_a_full_disk_is_none_and_a_warning_and_the_page_shows_the_banner(
    full_overlays: Path, caplog: pytest.LogCaptureFixture
):
    out = full_overlays
    name = sorted(PERU.iterdir())[0].name
    with Journal.open(out) as j:
        f = frame_named(j, name)
        with caplog.at_level(logging.WARNING, logger="edge.overlay"):
            assert ensure_overlay(j, out, f) is None
        assert "no space left" in caplog.text
        assert j.get(f.id).overlay is None
    files = [p.name for p in (out / "overlays").rglob("*") if p.is_file()]
    assert files == ["filler.bin"]  # no half file, no .tmp
    from .test_review_http import client

    with client(out) as c:
        r = c.get(f"/picture/{f.id}")
        assert r.status_code == 200 and r.content[:2] == b"\xff\xd8"  # the banner picture
        pic = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)
        assert pic is not None and pic.shape[1] > 0


def test_the_page_serves_the_overlay_drawn_on_demand(out: Path):
    pytest.importorskip("httpx")
    from .test_review_http import client

    name = sorted(PERU.iterdir())[0].name
    with Journal.open(out) as j:
        fid = frame_named(j, name).id
        bare = frame_named(j, sorted(PERU.iterdir())[1].name).id
    with client(out) as c:
        r = c.get(f"/picture/{fid}")
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        drawn = out / "overlays" / "S90" / f"{name}.overmap.jpg"
        assert drawn.is_file() and r.content == drawn.read_bytes()
        again = c.get(f"/picture/{fid}")
        assert again.content == r.content
        plain = c.get(f"/picture/{bare}")  # no overlay data: the banner picture, not a file
        assert plain.status_code == 200 and plain.content[:2] == b"\xff\xd8"
        assert c.get("/picture/999").status_code == 404
    with Journal.open(out) as j:
        assert j.get(fid).overlay == f"overlays/S90/{name}.overmap.jpg"
        assert j.get(bare).overlay is None
    assert sorted(p.name for p in (out / "overlays").rglob("*") if p.is_file()) == [
        f"{name}.overmap.jpg"
    ]


def test_a_drawn_overlay_that_leads_out_of_out_is_not_served(out: Path, tmp_path: Path):
    """A journal row pointing outside OUT/overlays, or OUT/overlays a link out of OUT: never
    followed, never written through."""
    name = sorted(PERU.iterdir())[0].name
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / "overlays").symlink_to(elsewhere)
    with Journal.open(out) as j:
        f = frame_named(j, name)
        assert ensure_overlay(j, out, f) is None
        j.set_overlay(f.id, f"review/S90/{name}")  # a real file, but not an overlay
        assert ensure_overlay(j, out, j.get(f.id)) is None
    assert not any(elsewhere.rglob("*"))


def test_edge_overlays_draws_every_missing_one_and_says_where(out: Path):
    runner = CliRunner()
    r = runner.invoke(cli, ["overlays", str(out)])
    assert r.exit_code == 0, r.output
    assert "2 overlay(s) drawn" in r.output and str(out / "overlays") in r.output
    files = sorted(p.relative_to(out).as_posix() for p in (out / "overlays").rglob("*.jpg"))
    assert len(files) == 2 and files[0].startswith("overlays/CA01/")
    with Journal.open(out) as j:
        assert sorted(f.overlay for f in j.frames() if f.overlay) == files
    mtimes = [(out / p).stat().st_mtime_ns for p in files]
    r = runner.invoke(cli, ["overlays", str(out)])
    assert r.exit_code == 0 and "0 overlay(s) drawn" in r.output
    assert [(out / p).stat().st_mtime_ns for p in files] == mtimes


def test_edge_overlays_never_makes_a_journal(tmp_path: Path):
    r = CliRunner().invoke(cli, ["overlays", str(tmp_path)])
    assert r.exit_code == 2
    assert not (tmp_path / "journal.sqlite").exists()
