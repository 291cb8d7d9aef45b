"""The sha256 of a file, the one implementation the journal, the sink, bundles and batches share.

Streamed (`hashlib.file_digest`): frames and model files are hashed on small devices, and
reading a 100 MB video or ONNX file whole to hash it would need that much memory for nothing.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read a block at a time. OSError propagates as is."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
