"""One sha256 of a file: streamed, equal to hashlib on the whole bytes, used by every caller."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from edge.hashing import file_sha256


def test_streamed_digest_equals_hashlib_on_a_multi_chunk_file(tmp_path: Path) -> None:
    path = tmp_path / "frame.jpg"
    data = os.urandom((3 << 20) + 12345)  # three whole 1 MiB chunks and a partial one
    path.write_bytes(data)
    want = hashlib.sha256(data).hexdigest()
    assert file_sha256(path) == want
    assert file_sha256(str(path)) == want
    (tmp_path / "empty").write_bytes(b"")
    assert file_sha256(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()


def test_a_missing_file_or_a_folder_is_an_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        file_sha256(tmp_path / "gone")
    with pytest.raises(IsADirectoryError):
        file_sha256(tmp_path)


def test_sink_bundle_and_batch_use_the_one_helper() -> None:
    import edge.batch.worker
    import edge.bundle
    import edge.sink

    for module in (edge.sink, edge.bundle, edge.batch.worker):
        assert module.file_sha256 is file_sha256, module.__name__
    assert not hasattr(edge.bundle, "sha256_file")  # the second copy is gone
