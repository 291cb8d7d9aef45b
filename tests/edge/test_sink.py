"""The sink: atomic, idempotent placing; disk full and permission errors; edge.loop.drain."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest

from edge import sink
from edge.durable import is_disk_full
from edge.journal import Decision, Journal
from edge.loop import drain
from edge.sink import (
    DiskFullError,
    SinkPermissionError,
    SourceMissingError,
    admit,
    clean_temps,
    file_sha256,
    place,
    sidecar,
)

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"

FRAMES = SHARED / "camtrap/mlwic_examples/CA-01"


def _frame(i: int = 0) -> Path:
    return sorted(FRAMES.glob("*.jpg"))[i]


def _drop(inbox: Path, rel: str, i: int = 0) -> Path:
    p = inbox / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(_frame(i), p)
    return p


def _temps(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(sink.TEMP_SUFFIX)]


def test_move_unicode_and_spaces(tmp_path: Path) -> None:
    src = _drop(tmp_path / "in", "Cámara 2/foto ñ 01.jpg")
    sha = file_sha256(src)
    dest = tmp_path / "out" / "tagged" / "Cámara 2" / "foto ñ 01.jpg"
    assert place(src, dest, copy=False) == dest
    assert not src.exists() and file_sha256(dest) == sha


@pytest.mark.parametrize("cross_fs", [False, True])
def test_copy_leaves_original_untouched(tmp_path: Path, monkeypatch, cross_fs: bool) -> None:
    if cross_fs:
        monkeypatch.setattr(sink, "_link", _exdev)
    src = _drop(tmp_path / "in", "cam/a.jpg")
    st = src.stat()
    dest = tmp_path / "out" / "empty" / "cam" / "a.jpg"
    assert place(src, dest, copy=True) == dest
    assert src.stat().st_mtime_ns == st.st_mtime_ns and src.stat().st_ino == st.st_ino
    assert file_sha256(dest) == file_sha256(src)
    assert dest.stat().st_mtime_ns == st.st_mtime_ns
    assert not _temps(tmp_path)


def _exdev(src: Path, dst: Path) -> None:
    raise OSError(errno.EXDEV, "Invalid cross-device link", str(src))


def test_move_across_filesystems(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(sink, "_link", _exdev)
    src = _drop(tmp_path / "in", "cam/a.jpg")
    sha = file_sha256(src)
    dest = tmp_path / "out" / "review" / "cam" / "a.jpg"
    assert place(src, dest, copy=False) == dest
    assert not src.exists() and file_sha256(dest) == sha and not _temps(tmp_path)


def test_idempotent_after_each_crash_point(tmp_path: Path) -> None:
    src = _drop(tmp_path / "in", "a.jpg")
    sha = file_sha256(src)
    dest = tmp_path / "out" / "a.jpg"
    # both there with the same bytes (crash after copy, before unlink): finish the move
    dest.parent.mkdir(parents=True)
    shutil.copy2(src, dest)
    assert place(src, dest, copy=False, sha256=sha) == dest
    assert not src.exists()
    # src gone, dest holds the bytes (crash after the rename): done, nothing changes
    assert place(src, dest, copy=False, sha256=sha) == dest
    assert file_sha256(dest) == sha
    # src gone and the bytes nowhere: said clearly
    with pytest.raises(SourceMissingError):
        place(src, tmp_path / "out" / "b.jpg", copy=False, sha256=sha)


def test_collision_gets_a_deterministic_hash_name(tmp_path: Path) -> None:
    dest = tmp_path / "out" / "IMG_0001.JPG"
    dest.parent.mkdir(parents=True)
    shutil.copy2(_frame(1), dest)
    src = _drop(tmp_path / "in", "IMG_0001.JPG", 0)
    sha = file_sha256(src)
    where = place(src, dest, copy=False)
    assert where.name == f"IMG_0001__{sha[:8]}.JPG"
    assert file_sha256(dest) == file_sha256(_frame(1)) and file_sha256(where) == sha
    # a retry after a crash finds it under the same name
    assert place(src, dest, copy=False, sha256=sha) == where


def test_is_disk_full_is_enospc_or_edquot_only() -> None:
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert not is_disk_full(OSError(errno.EIO, "Input/output error"))
    assert not is_disk_full(PermissionError(errno.EACCES, "Permission denied"))
    assert not is_disk_full(ValueError(errno.ENOSPC))  # not an OSError: a fault, not a pause


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_disk_full_keeps_source_and_cleans_temp(tmp_path: Path, monkeypatch, code: int) -> None:
    monkeypatch.setattr(sink, "_link", _exdev)

    def full(fd: int) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(sink.os, "fsync", full)
    src = _drop(tmp_path / "in", "cam/a.jpg")
    sha = file_sha256(src)
    dest = tmp_path / "out" / "cam" / "a.jpg"
    for copy in (False, True):
        with pytest.raises(DiskFullError):
            place(src, dest, copy=copy)
        assert file_sha256(src) == sha and not dest.exists() and not _temps(tmp_path)


def test_permission_denied_names_the_path(tmp_path: Path, monkeypatch) -> None:
    def denied(src: Path, dst: Path) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(dst))

    monkeypatch.setattr(sink, "_link", denied)
    src = _drop(tmp_path / "in", "a.jpg")
    dest = tmp_path / "out" / "a.jpg"
    with pytest.raises(SinkPermissionError) as e:
        place(src, dest, copy=False)
    assert e.value.path == dest and src.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_permission_denied_for_real(tmp_path: Path) -> None:
    src = _drop(tmp_path / "in", "a.jpg")
    locked = tmp_path / "out"
    locked.mkdir(mode=0o500)
    try:
        with pytest.raises(SinkPermissionError):
            place(src, locked / "a.jpg", copy=True)
    finally:
        locked.chmod(0o700)
    assert src.exists()


def test_sidecar_is_json_next_to_frame(tmp_path: Path) -> None:
    dest = tmp_path / "ñ a.jpg"
    dest.write_bytes(b"x")
    p = sidecar(dest, {"label": "cièrvo", "softmax": 0.5})
    assert p.name == "ñ a.jpg.json"
    import json

    assert json.loads(p.read_text(encoding="utf-8")) == {"label": "cièrvo", "softmax": 0.5}
    assert not _temps(tmp_path)


def test_clean_temps_removes_only_ours(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / f".x.jpg.1234{sink.TEMP_SUFFIX}").write_bytes(b"x")
    (tmp_path / "a" / "keep.tmp").write_bytes(b"x")
    assert clean_temps(tmp_path) == 1
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["keep.tmp"]


def _decide_all(kind: str):
    def decide(paths: list[Path]) -> list[Decision]:
        return [Decision(kind, label="deer", class_index=1, softmax=0.7) for _ in paths]

    return decide


def test_drain_moves_journals_and_writes_sidecars(tmp_path: Path) -> None:
    inbox, out = tmp_path / "in", tmp_path / "out"
    shas = {}
    for i, rel in enumerate(["cam1/a.jpg", "cam2/b.jpg", "c.jpg"]):
        shas[rel] = file_sha256(_drop(inbox, rel, i))
    with Journal.open(out) as j:
        for p in sorted(inbox.rglob("*.jpg")):
            admit(j, inbox, out, p)
        assert drain(j, inbox, out, _decide_all("tagged"), batch=2) == 3
        for f in j.frames():
            assert f.state == "done" and f.dest == f"tagged/{f.relpath}"
            assert file_sha256(out / f.dest) == shas[f.relpath]
            assert (out / (f.dest + ".json")).exists()
        assert not list(inbox.rglob("*.jpg"))


def test_name_reused_after_done_is_a_second_frame(tmp_path: Path) -> None:
    """A card swap: IMG_0001.JPG comes again with other bytes; both are kept, once each."""
    inbox, out = tmp_path / "in", tmp_path / "out"
    with Journal.open(out) as j:
        admit(j, inbox, out, _drop(inbox, "cam/IMG_0001.JPG", 0))
        drain(j, inbox, out, _decide_all("tagged"))
        second = _drop(inbox, "cam/IMG_0001.JPG", 1)
        sha2 = file_sha256(second)
        admit(j, inbox, out, second)
        drain(j, inbox, out, _decide_all("tagged"))
        a, b = j.frames()
        assert a.state == b.state == "done"
        assert a.dest == "tagged/cam/IMG_0001.JPG"
        assert b.dest == f"tagged/cam/IMG_0001__{sha2[:8]}.JPG"
        assert file_sha256(out / a.dest) == file_sha256(_frame(0))
        assert file_sha256(out / b.dest) == sha2


def test_copy_mode_rescan_skips_done_frames(tmp_path: Path) -> None:
    inbox, out = tmp_path / "in", tmp_path / "out"
    src = _drop(inbox, "cam/a.jpg")
    with Journal.open(out) as j:
        assert admit(j, inbox, out, src) is not None
        drain(j, inbox, out, _decide_all("empty"), copy=True)
        assert admit(j, inbox, out, src) is None  # known by path, size and mtime
        assert src.exists() and j.counts() == {"done": 1}


def test_disk_full_in_drain_loses_nothing(tmp_path: Path, monkeypatch) -> None:
    inbox, out = tmp_path / "in", tmp_path / "out"
    src = _drop(inbox, "cam/a.jpg")
    sha = file_sha256(src)
    real_fsync = os.fsync
    monkeypatch.setattr(sink, "_link", _exdev)

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with Journal.open(out) as j:
        admit(j, inbox, out, src)
        monkeypatch.setattr(sink.os, "fsync", full)
        with pytest.raises(DiskFullError):
            drain(j, inbox, out, _decide_all("review"))
        (f,) = j.frames()
        assert f.state == "decided" and file_sha256(src) == sha and not _temps(out)
        # space again: the retry finishes the frame
        monkeypatch.setattr(sink.os, "fsync", real_fsync)
        assert drain(j, inbox, out, _decide_all("review")) == 1
        (f,) = j.frames()
        assert f.state == "done" and file_sha256(out / f.dest) == sha and not src.exists()


def test_unreadable_frame_is_quarantined_with_reason(tmp_path: Path) -> None:
    inbox, out = tmp_path / "in", tmp_path / "out"
    bad = inbox / "cam" / "bad.jpg"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(_frame(0).read_bytes()[:5000])
    with Journal.open(out) as j:
        admit(j, inbox, out, bad, quarantine_reason="truncated JPEG")
        drain(j, inbox, out, _decide_all("tagged"))
        (f,) = j.frames()
        assert (f.state, f.reason, f.dest) == (
            "quarantined",
            "truncated JPEG",
            "quarantine/cam/bad.jpg",
        )
        assert (out / "quarantine" / "cam" / "bad.jpg").exists() and not bad.exists()


def test_source_rewritten_after_seen_becomes_a_new_frame(tmp_path: Path) -> None:
    """Bytes rewritten under the same name before they were placed: the old row is closed
    as vanished (its bytes are nowhere), the new bytes are a frame of their own, placed once."""
    inbox, out = tmp_path / "in", tmp_path / "out"
    with Journal.open(out) as j:
        admit(j, inbox, out, _drop(inbox, "cam/a.jpg", 0))
        new = inbox / "cam" / "a.jpg"
        new.write_bytes(_frame(1).read_bytes())
        os.utime(new, (1e9, 1e9))
        drain(j, inbox, out, _decide_all("tagged"))
        (old,) = j.frames()
        assert old.state == "vanished" and "changed" in (old.reason or "")
        assert new.exists()
        admit(j, inbox, out, new)
        drain(j, inbox, out, _decide_all("tagged"))
        assert j.counts() == {"done": 1, "vanished": 1}
        (done,) = j.frames("done")
        assert file_sha256(out / done.dest) == file_sha256(_frame(1)) and not new.exists()


def test_prefetch_is_told_each_batch_before_decide_gets_it(tmp_path: Path) -> None:
    """The look-ahead hint names exactly the lists `decide` receives, ahead of time; a frame
    that vanishes after being announced changes the batch, and decide gets the real one."""
    inbox, out = tmp_path / "in", tmp_path / "out"
    for i in range(7):
        _drop(inbox, f"cam/{i}.jpg", i)
    log: list[tuple[str, list[str]]] = []

    def names(paths: list[Path]) -> list[str]:
        return [p.name for p in paths]

    def decide(paths: list[Path]) -> list[Decision]:
        log.append(("decide", names(paths)))
        if paths[0].name == "0.jpg":
            (inbox / "cam/4.jpg").unlink()  # announced in the second batch, gone before it
        return [Decision("tagged", label="x") for _ in paths]

    with Journal.open(out) as j:
        for p in sorted(inbox.rglob("*.jpg")):
            admit(j, inbox, out, p)
        n = drain(
            j,
            inbox,
            out,
            decide,
            batch=3,
            lookahead=2,
            ahead=lambda paths: log.append(("announce", names(paths))),
        )
        assert n == 7  # six placed, one vanished
        assert [f.state for f in j.frames()].count("vanished") == 1
    decided = [b for kind, b in log if kind == "decide"]
    assert decided == [["0.jpg", "1.jpg", "2.jpg"], ["3.jpg", "5.jpg"], ["6.jpg"]]
    # the first call announces its batch and the next two before deciding anything
    assert log[:4] == [
        ("announce", ["0.jpg", "1.jpg", "2.jpg"]),
        ("announce", ["3.jpg", "4.jpg", "5.jpg"]),
        ("announce", ["6.jpg"]),
        ("decide", ["0.jpg", "1.jpg", "2.jpg"]),
    ]
    for i, (kind, batch) in enumerate(log):
        if kind == "decide":  # every batch decided was announced, as it is, just before
            assert ("announce", batch) in log[:i]
