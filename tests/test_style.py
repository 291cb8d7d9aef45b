"""The code's one style: `ruff check` (lint, imports) and `ruff format` (layout) over the
whole tree, as `pyproject.toml` configures them. A change that is not formatted fails here,
not in review."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TREE = ["edge", "export", "tests", "bench"]


def _ruff() -> str:
    found = Path(sys.executable).with_name("ruff")
    if found.is_file():
        return str(found)
    which = shutil.which("ruff")
    if which is None:  # the dev extra installs it: its absence is a broken install
        pytest.fail("ruff is not installed (./install.sh --dev installs it)")
    return which


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_the_tree_is_clean(command: list[str]) -> None:
    done = subprocess.run([_ruff(), *command, *TREE], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, f"ruff {' '.join(command)}:\n{done.stdout}{done.stderr}"
