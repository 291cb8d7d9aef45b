"""edge.loader: the read and infer stages on real frames and a real bundle, and the Loader
that starts batches ahead in threads of its own."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from edge.bundle import load_bundle
from edge.loader import MAX_AHEAD, Loaded, Loader, infer, min_side, read
from edge.runtime import Runtime

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
PERU = DATA / "camtrap" / "peru_s90_animl" / "S90_SDZG1"


@pytest.fixture(scope="module")
def runtime(tiny_bundle: Path) -> Runtime:
    return Runtime.from_bundle(load_bundle(tiny_bundle), threads=1)


@pytest.fixture(scope="module")
def frames() -> list[Path]:
    paths = sorted(PERU.glob("*.JPG"))[:6]
    if len(paths) < 6:
        pytest.skip(f"reference data missing: {PERU}")
    return paths


def same_loaded(a: Loaded, b: Loaded) -> None:
    assert a.paths == b.paths and a.failed == b.failed and a.denied == b.denied
    assert a.index == b.index and a.taken == b.taken
    assert all(np.array_equal(x, y) for x, y in zip(a.images, b.images, strict=True))
    assert np.array_equal(a.views, b.views)
    assert a.outputs is not None and b.outputs is not None
    for name in ("probs", "cam", "foreground"):
        assert np.array_equal(getattr(a.outputs, name), getattr(b.outputs, name)), name


def test_a_big_jpeg_is_decoded_reduced_but_taken_keeps_its_size(runtime, frames, tmp_path):
    big = tmp_path / "big.jpg"
    with PIL.Image.open(frames[0]) as im:
        im.resize((3072, 2304)).save(big, quality=85)
    smallest = min_side(runtime)
    assert smallest == 74  # a 64x64 bundle, centre crop 0.875
    loaded, prepared = read([big, frames[1]], runtime, smallest)
    assert loaded.failed == {} and loaded.denied == {} and loaded.index == [0, 1]
    image = loaded.images[0]
    assert min(image.shape[:2]) >= smallest
    assert image.shape[:2] == (288, 384)  # 1/8 of 2304x3072: the smallest DCT scale that fits
    assert (loaded.taken[0].width, loaded.taken[0].height) == (3072, 2304)
    assert loaded.taken[0].path == big
    assert (loaded.taken[1].width, loaded.taken[1].height) == (768, 576)
    assert loaded.images[1].shape[:2] == (144, 192)  # 768x576 at 1/4
    assert loaded.taken[1].time_source == "exif" and loaded.taken[1].time is not None
    assert loaded.outputs is None and loaded.views is not None and len(loaded.views) == 2
    done = infer(loaded, prepared, runtime)
    assert done.outputs is not None and len(done.outputs) == 2


def test_garbage_and_truncated_files_land_in_failed(runtime, frames, tmp_path):
    text = tmp_path / "text.jpg"
    text.write_bytes(b"this is not a picture\n")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(frames[0].read_bytes()[:5000])
    zero = tmp_path / "zero.jpg"
    zero.write_bytes(b"")
    good = tmp_path / "good.jpg"
    shutil.copy(frames[2], good)
    loaded = infer(*read([text, good, cut, zero], runtime, min_side(runtime)), runtime)
    assert sorted(loaded.failed) == [0, 2, 3]
    assert "truncated" in loaded.failed[2]
    assert loaded.denied == {}
    assert loaded.index == [1] and [t.path for t in loaded.taken] == [good]
    assert loaded.outputs is not None and len(loaded.outputs) == 1


def test_nothing_decodable_gives_no_outputs(runtime, tmp_path):
    text = tmp_path / "a.jpg"
    text.write_bytes(b"nope")
    loaded = infer(*read([text], runtime, min_side(runtime)), runtime)
    assert loaded.failed.keys() == {0} and loaded.images == []
    assert loaded.views is None and loaded.outputs is None


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 file")
def test_an_unreadable_file_lands_in_denied(runtime, frames, tmp_path):
    locked = tmp_path / "locked.jpg"
    shutil.copy(frames[0], locked)
    locked.chmod(0)
    try:
        loaded, _ = read([frames[1], locked], runtime, min_side(runtime))
    finally:
        locked.chmod(0o644)
    assert loaded.denied.keys() == {1} and loaded.failed == {}
    assert loaded.index == [0]


def test_ahead_then_get_is_a_direct_get(runtime, frames):
    batch = frames[:3]
    with Loader(runtime) as loader:
        direct = loader.get(list(batch))
        loader.ahead(list(batch))
        loader.ahead(list(batch))  # announced twice: started once
        assert len(loader._ahead) == 1
        early = loader.get(list(batch))
        assert loader._ahead == {}
    same_loaded(direct, early)
    same_loaded(direct, infer(*read(batch, runtime, min_side(runtime)), runtime))


def test_batches_announced_and_never_asked_for_are_bounded(runtime, frames):
    many = [[frames[i % len(frames)]] * (1 + i // len(frames)) for i in range(MAX_AHEAD + 4)]
    assert len({tuple(b) for b in many}) == len(many)
    with Loader(runtime) as loader:
        for b in many:
            loader.ahead(b)
        assert len(loader._ahead) == len(many)
        other = loader.get([frames[0], frames[1]])  # never announced
        assert len(other.taken) == 2
        assert len(loader._ahead) <= MAX_AHEAD
        # the newest are the ones kept, and still hand their work over
        kept = [tuple(b) for b in many[-MAX_AHEAD:]]
        assert list(loader._ahead) == kept
        newest = loader.get(list(many[-1]))
        assert len(newest.taken) == len(many[-1])
        assert tuple(many[-1]) not in loader._ahead


def _loader_threads() -> list[threading.Thread]:
    return [
        t
        for t in threading.enumerate()
        if t.name.startswith(("edge-load", "edge-infer")) and t.is_alive()
    ]


def test_close_leaves_no_loader_thread_alive(runtime, frames):
    before = set(_loader_threads())
    loader = Loader(runtime)
    for k in range(3):
        loader.ahead(list(frames[k : k + 2]))
    loader.get(list(frames[:2]))
    assert set(_loader_threads()) - before  # it did start threads of its own
    loader.close()
    assert not set(_loader_threads()) - before
    with Loader(runtime) as other:
        other.ahead(list(frames[:1]))
    assert not set(_loader_threads()) - before
