"""The watcher's config: the shipped example loads, mistakes are named, thresholds layer."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from edge.config import Config, ConfigError, load_config, parse_config, resolve_thresholds

EXAMPLE = Path(__file__).parents[2] / "examples" / "edge.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edge.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_shipped_example_loads_with_its_values() -> None:
    cfg = load_config(EXAMPLE)
    assert cfg.watch.poll == "auto" and cfg.watch.copy_files is True  # the samples stay put
    assert cfg.triage.delete_empty is False
    # the thresholds are the bundle's: a lower `empty` in an example would put animals in empty/
    assert (cfg.triage.tag, cfg.triage.empty, cfg.triage.empty_foreground) == (None, None, None)
    assert (cfg.watch.lookahead, cfg.watch.overlays, cfg.runtime.map) == (2, True, "cam")
    assert cfg.runtime.providers == [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert cfg.deployment.deployment_start == date(2026, 5, 1)
    assert cfg.project.contributors[0].role == "principalInvestigator"
    assert cfg.taxa["wildebeest"] == "Connochaetes taurinus"
    # per-camera values override the shared ones, the rest is inherited
    cam2 = cfg.deployment.for_camera("CAM02")
    assert (cam2.location_id, cam2.latitude, cam2.camera_model) == (
        "S2",
        -2.4402,
        "Browning-BTC-8E",
    )
    assert cam2.deployment_id == "serengeti-2026-A-CAM02"
    assert cfg.deployment.for_camera("CAM01").latitude == -2.4531


def test_empty_file_is_a_valid_config_with_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, ""))
    assert cfg.watch.batch_size == 16 and cfg.triage.tag is None
    assert cfg.source == tmp_path / "edge.toml"


def test_relative_paths_are_read_from_the_config_folder(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, '[watch]\ninbox = "in"\nout = "/abs/out"\n'))
    assert cfg.watch.inbox == tmp_path.resolve() / "in"
    assert cfg.watch.out == Path("/abs/out")


def test_unknown_key_is_named_with_the_file_and_what_is_allowed(tmp_path: Path) -> None:
    path = write(tmp_path, "[triage]\ndelete_emtpy = true\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert str(path) in msg
    assert "triage.delete_emtpy" in msg
    assert "delete_empty" in msg and "burst_gap_seconds" in msg  # the allowed keys


def test_unknown_key_in_a_camera_table_and_unknown_section(tmp_path: Path) -> None:
    path = write(tmp_path, "[deployment.cameras.CAM1]\nlat = 3\n[cameras]\nx = 1\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert "deployment.cameras.CAM1.lat" in msg and "latitude" in msg
    assert "unknown key 'cameras'" in msg and "deployment" in msg


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[deployment]\nlatitude = 91.5\n", "deployment.latitude = 91.5"),
        ("[deployment]\nlongitude = -181\n", "deployment.longitude = -181"),
        ("[deployment.cameras.A]\nlatitude = -90.01\n", "deployment.cameras.A.latitude"),
        ("[triage]\ntag = 1.5\n", "triage.tag = 1.5"),
        ("[triage]\ndelete_empty = true\n", "empty_retention_days"),
        ('[watch]\npoll = "sometimes"\n', "watch.poll"),
        ('[deployment]\ntimezone = "Mars/Base"\n', "IANA"),
        ('[deployment]\ndeployment_start = "not a date"\n', "deployment.deployment_start"),
        (
            '[deployment]\ndeployment_start = "2026-05-03"\ndeployment_end = "2026-05-01"\n',
            "deployment_end is before deployment_start",
        ),
        ('[runtime]\nproviders = ["tpu"]\n', "tpu"),
        ('[project]\nsampling_design = "random"\n', "opportunistic"),
        ('[[project.contributors]]\ntitle = "A"\nrole = "boss"\n', "principalInvestigator"),
        ("[watch\n", "not valid TOML"),
    ],
)
def test_bad_values_are_refused_with_the_key(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ConfigError, match="edge.toml") as e:
        load_config(write(tmp_path, text))
    assert needle in str(e.value)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.toml")


def test_delete_empty_with_retention_is_accepted() -> None:
    cfg = parse_config({"triage": {"delete_empty": True, "empty_retention_days": 30}})
    assert cfg.triage.empty_retention_days == 30


def test_thresholds_bundle_then_file_then_flags(tmp_path: Path) -> None:
    bundle = {"tag": 0.7, "empty": 0.6, "empty_foreground": 0.02, "custom": 0.5}
    cfg = load_config(write(tmp_path, "[triage]\ntag = 0.8\nempty = 0.65\n"))
    got = resolve_thresholds(bundle, cfg, {"tag": 0.9, "empty": None, "empty_foreground": None})
    # flag beats file beats bundle; unset flags fall through; unknown bundle keys are kept
    assert got == {"tag": 0.9, "empty": 0.65, "empty_foreground": 0.02, "custom": 0.5}
    assert resolve_thresholds(bundle, Config(), {}) == bundle
    assert resolve_thresholds({}, cfg, {"empty_foreground": 0.1}) == {
        "tag": 0.8,
        "empty": 0.65,
        "empty_foreground": 0.1,
    }


def test_thresholds_refuse_unknown_flags_and_out_of_range() -> None:
    with pytest.raises(ConfigError, match="tga"):
        resolve_thresholds({}, Config(), {"tga": 0.5})
    with pytest.raises(ConfigError, match="between 0 and 1"):
        resolve_thresholds({}, Config(), {"tag": 1.2})
