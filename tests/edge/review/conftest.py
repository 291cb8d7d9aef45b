"""Fixtures of the `edge review` tests: an OUT made once by the real watcher, copied fresh for
each test that changes it."""

from __future__ import annotations

from pathlib import Path

import pytest

from .review_helpers import build_out, copy_out


@pytest.fixture(scope="session")
def review_template(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """OUT after `edge watch --once` on nine real frames, all kept for review (read only)."""
    return build_out(tiny_bundle, tmp_path_factory.mktemp("review-template"))


@pytest.fixture
def out(review_template: Path, tmp_path: Path) -> Path:
    """A fresh copy of the template OUT for one test."""
    return copy_out(review_template, tmp_path / "out")
