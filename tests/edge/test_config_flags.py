"""Config.with_flags, the one way a command-line flag overrides the config file, and
WatchOptions, which reads every tunable from the config it makes that way."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.config import FLAGS, Config, ConfigError, load_config
from edge.watch import WatchOptions

TOML = """
[watch]
inbox = "card"
copy = true
settle_seconds = 5.0
batch_size = 4
poll = false

[triage]
tag = 0.75
burst_gap_seconds = 3.0

[runtime]
threads = 2
"""


@pytest.fixture
def loaded(tmp_path: Path) -> Config:
    path = tmp_path / "edge.toml"
    path.write_text(TOML, encoding="utf-8")
    return load_config(path)


def test_flags_are_laid_over_the_file_and_none_means_not_given(loaded: Config, tmp_path: Path):
    merged = loaded.with_flags(
        {"settle": 0.5, "batch": None, "copy": None, "tag": None, "threads": 3, "burst_frames": 4}
    )
    assert merged.watch.settle_seconds == 0.5  # flag
    assert merged.watch.batch_size == 4 and merged.watch.copy_files is True  # file, flag None
    assert merged.watch.poll is False and merged.triage.tag == 0.75
    assert merged.triage.burst_gap_seconds == 3.0 and merged.triage.burst_max_frames == 4
    assert merged.runtime.threads == 3
    assert merged.watch.inbox == tmp_path / "card"  # resolved against the file's folder
    assert merged.source == tmp_path / "edge.toml"
    assert loaded.watch.settle_seconds == 5.0  # the loaded config itself is left as it was


def test_a_false_flag_is_given_not_missing(loaded: Config):
    assert loaded.with_flags({"copy": False}).watch.copy_files is False
    assert loaded.with_flags({"overlays": False}).watch.overlays is False


def test_no_flags_change_nothing(loaded: Config):
    assert loaded.with_flags({}) == loaded
    assert loaded.with_flags(dict.fromkeys(FLAGS)) == loaded


def test_the_example_config_survives_the_round_trip():
    example = Path(__file__).resolve().parents[2] / "examples" / "edge.toml"
    cfg = load_config(example)
    merged = cfg.with_flags({"settle": 1.0})
    assert merged.deployment == cfg.deployment and merged.project == cfg.project
    assert merged.taxa == cfg.taxa and merged.review == cfg.review
    assert merged.watch.settle_seconds == 1.0


def test_an_unknown_flag_is_refused_by_name():
    with pytest.raises(ConfigError, match="settel"):
        Config().with_flags({"settel": 1.0})


@pytest.mark.parametrize(
    ("flag", "value", "named"),
    [
        ("settle", -1.0, "--settle"),
        ("settle", 4000.0, "--settle"),
        ("batch", 0, "--batch"),
        ("burst_frames", 0, "--burst-frames"),
        ("delete_empty_after", 0, "--delete-empty-after"),
        ("tag", 1.5, "--tag"),
        ("lookahead", 17, "--lookahead"),
        ("copy", "maybe", "--copy"),
        ("measure", "nope", "--measure"),
    ],
)
def test_a_value_out_of_range_is_refused_naming_the_flag(flag, value, named):
    with pytest.raises(ConfigError) as e:
        Config().with_flags({flag: value})
    assert str(e.value).startswith(named + " = ")
    assert repr(value) in str(e.value)


def test_delete_empty_after_turns_deleting_on():
    cfg = Config().with_flags({"delete_empty_after": 7})
    assert cfg.triage.delete_empty is True and cfg.triage.empty_retention_days == 7
    assert Config().with_flags({"delete_empty_after": None}).triage.delete_empty is False
    opts = WatchOptions(Path("in"), Path("out"), {}, delete_empty_after=2.5)
    assert opts.delete_empty_after_days == 2.5
    assert WatchOptions(Path("in"), Path("out"), {}).delete_empty_after_days is None


def test_polling_flag():
    assert Config().with_flags({"polling": True}).watch.poll is True
    assert Config().with_flags({"polling": False}).watch.poll is False
    assert WatchOptions(Path("i"), Path("o"), {}).polling is None  # auto
    assert WatchOptions(Path("i"), Path("o"), {}, polling=True).polling is True


def test_watch_options_read_their_flags_back():
    opts = WatchOptions(
        Path("in"),
        Path("out"),
        {"tag": 0.7},
        settle=0.5,
        copy=True,
        batch=3,
        burst_gap=2.0,
        lookahead=0,
    )
    assert opts.settle == 0.5 and opts.copy is True and opts.batch == 3
    assert opts.burst_gap == 2.0 and opts.lookahead == 0
    assert opts.config.watch.settle_seconds == 0.5
    defaults = WatchOptions(Path("in"), Path("out"), {})
    assert defaults.settle == 2.0 and defaults.copy is False and defaults.batch == 16
    with pytest.raises(ConfigError, match="--settle"):
        WatchOptions(Path("in"), Path("out"), {}, settle=-0.1)


def test_watch_options_a_flag_beats_the_config(loaded: Config):
    opts = WatchOptions(Path("in"), Path("out"), {}, config=loaded, settle=0.25, copy=False)
    assert opts.settle == 0.25 and opts.copy is False
    assert opts.batch == 4 and opts.burst_gap == 3.0 and opts.threads == 2  # from the file
    assert opts.polling is False
    same = WatchOptions(Path("in"), Path("out"), {}, config=loaded, settle=None)
    assert same.settle == 5.0 and same.copy is True
