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
    r = runner.invoke(
        app, ["export-dp", str(nowhere), "--config", str(config), "--bundle", str(tiny_bundle)]
    )
    assert r.exit_code == 2, r.output
    assert "no journal.sqlite here" in flat(r.output) and "Traceback" not in r.output
    assert not (tmp_path / "no").exists()  # not the journal, not its folders
    empty = tmp_path / "empty"
    empty.mkdir()
    for args in (
        ["summary", str(empty)],
        ["export-dp", str(empty), "--config", str(config), "--bundle", str(tiny_bundle)],
    ):
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
    r = runner.invoke(
        app,
        [
            "watch",
            str(inbox),
            "--out",
            str(out),
            "--bundle",
            str(tiny_bundle),
            "--once",
            "--no-tui",
            "--settle",
            "0.1",
        ],
    )
    assert r.exit_code == 0, r.output
    with Journal.open(out, create=False) as j:
        assert len(j.frames()) == 2
    r = runner.invoke(app, ["summary", str(out)])
    assert r.exit_code == 0 and "2 frames in the journal" in flat(r.output)


EXAMPLE = ROOT / "examples" / "edge.toml"


def _paths(value, where: str = "") -> list[tuple[str, Path]]:
    """Every path in a loaded config, with its key."""
    if isinstance(value, Path):
        return [(where, value)]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _paths(v, f"{where}.{k}".strip("."))]
    if isinstance(value, list | tuple):
        return [p for i, v in enumerate(value) for p in _paths(v, f"{where}[{i}]")]
    if hasattr(type(value), "model_fields"):
        return [
            p
            for k in type(value).model_fields
            for p in _paths(getattr(value, k), f"{where}.{k}".strip("."))
        ]
    return []


def test_the_example_config_names_only_paths_that_are_there_or_leaves_them_out():
    """Loaded with the real loader: each path it names is relative (it travels with the
    checkout), resolved against the file's folder, and there (OUT: its parent, the watcher
    makes OUT); a path it leaves out takes the default (the bundle: default_bundle())."""
    import tomllib

    from edge.config import load_config

    raw = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    cfg = load_config(EXAMPLE)
    named = [(k, p) for k, p in _paths(cfg) if k != "source"]
    assert {k for k, _ in named} >= {"watch.inbox", "watch.out"}
    for key, path in named:
        section, _, name = key.partition(".")
        written = raw[section][name]
        assert not Path(written).is_absolute(), f"{key} = {written!r}"
        assert path == EXAMPLE.parent / written
        assert (path.parent if key == "watch.out" else path).exists(), f"{key} = {written!r}"
    assert "bundle" not in raw.get("runtime", {}) and cfg.runtime.bundle is None


def test_the_readmes_export_dp_command_works_with_the_example_config(
    tiny_bundle: Path, tmp_path: Path
):
    """`edge export-dp sorted --config examples/edge.toml` after the quick start's watch run
    (here into a temporary OUT, with the test bundle)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "edge export-dp sorted --config examples/edge.toml" in readme
    assert "edge watch samples/camtrap --out sorted --copy --once" in readme
    out = tmp_path / "sorted"
    r = runner.invoke(
        app,
        [
            "watch",
            str(ROOT / "samples" / "camtrap"),
            "--out",
            str(out),
            "--copy",
            "--once",
            "--no-tui",
            "--settle",
            "0.1",
            "--bundle",
            str(tiny_bundle),
            "--config",
            str(EXAMPLE),
        ],
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        app, ["export-dp", str(out), "--config", str(EXAMPLE), "--bundle", str(tiny_bundle)]
    )
    assert r.exit_code == 0, r.output
    package = out / "camtrap-dp"
    assert {p.name for p in package.iterdir()} >= {
        "datapackage.json",
        "media.csv",
        "deployments.csv",
        "observations.csv",
    }
    media = (package / "media.csv").read_text(encoding="utf-8").splitlines()
    samples = list((ROOT / "samples" / "camtrap").rglob("*.JPG"))
    assert samples and len(media) - 1 == len(samples)


@pytest.mark.parametrize("command", ["evaluate", "calibrate"])
def test_a_missing_labels_csv_is_named_plainly(tiny_bundle: Path, tmp_path: Path, command: str):
    missing = tmp_path / "LABELS.csv"
    before = (tiny_bundle / "manifest.json").read_bytes()
    r = runner.invoke(app, [command, str(missing), "--bundle", str(tiny_bundle)])
    assert r.exit_code == 2, r.output
    text = flat(r.output)
    assert f"{missing}: no such file" in text
    assert "Errno" not in text and "Traceback" not in r.output
    r = runner.invoke(app, [command, str(tmp_path), "--bundle", str(tiny_bundle)])
    assert r.exit_code == 2 and "a folder, not a CSV file" in flat(r.output)
    assert (tiny_bundle / "manifest.json").read_bytes() == before  # calibrate changed nothing
