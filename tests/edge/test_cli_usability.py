"""The commands around the watcher, as a new user first meets them: readers that never make a
journal, the example config as shipped, missing label files. Through the real typer app."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edge.cli import app
from edge.journal import Journal, JournalMissingError

ROOT = Path(__file__).resolve().parents[2]
CA01 = ROOT.parent / "shared" / "data" / "camtrap" / "mlwic_examples" / "CA-01"
runner = CliRunner()


def flat(text: str) -> str:
    return " ".join(text.split())


def test_readers_never_create_a_journal(tiny_bundle: Path, tmp_path: Path):
    config = tmp_path / "edge.toml"
    config.write_text("[watch]\ncopy = true\n")
    nowhere = tmp_path / "no" / "such" / "out"
    r = runner.invoke(app, ["export-dp", str(nowhere), "--config", str(config),
                            "--bundle", str(tiny_bundle)])
    assert r.exit_code == 2, r.output
    assert "no journal.sqlite here" in flat(r.output) and "Traceback" not in r.output
    assert not (tmp_path / "no").exists()  # not the journal, not its folders
    empty = tmp_path / "empty"
    empty.mkdir()
    for args in (["summary", str(empty)],
                 ["export-dp", str(empty), "--config", str(config), "--bundle",
                  str(tiny_bundle)]):
        r = runner.invoke(app, args)
        assert r.exit_code == 2, r.output
        assert "no journal.sqlite here" in flat(r.output)
        assert list(empty.iterdir()) == []
    with pytest.raises(JournalMissingError):
        Journal.open(empty, create=False)
    assert list(empty.iterdir()) == []


def test_readers_read_a_journal_that_is_there(tiny_bundle: Path, tmp_path: Path):
    inbox, out = tmp_path / "in", tmp_path / "out with space"
    (inbox / "cam").mkdir(parents=True)
    for p in sorted(CA01.iterdir())[:2]:
        shutil.copy(p, inbox / "cam")
    r = runner.invoke(app, ["watch", str(inbox), "--out", str(out), "--bundle",
                            str(tiny_bundle), "--once", "--no-tui", "--settle", "0.1"])
    assert r.exit_code == 0, r.output
    with Journal.open(out, create=False) as j:
        assert len(j.frames()) == 2
    r = runner.invoke(app, ["summary", str(out)])
    assert r.exit_code == 0 and "2 frames in the journal" in flat(r.output)
