"""The sha256 of a file, the one implementation the journal, the sink, bundles and batches share.

Why streaming: frames and model files are hashed on small devices; reading a 100 MB video or
ONNX file whole to hash it would need that much memory at once for nothing.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 1 << 20


def file_sha256(path: str | Path, chunk: int = CHUNK) -> str:
    """Hex sha256 of a file's bytes, read `chunk` bytes at a time. OSError propagates as is."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1 byte, got {chunk}")
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
