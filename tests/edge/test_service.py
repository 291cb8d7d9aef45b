"""The systemd unit: it parses, systemd's own checker accepts it, ExecStart splits back right."""

from __future__ import annotations

import getpass
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from edge.service import (
    PROVIDERS_ENV,
    ServiceError,
    install_unit,
    next_steps,
    quote_arg,
    systemd_unit,
)

ARGS = ["watch", "/data/in box", "--out", "/data/100%", "--tag", "0.8", 'say "hi"', "$HOME"]


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> values (systemd keys may repeat, unlike configparser's)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for line in text.splitlines():
        if not line.strip() or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            assert line.endswith("]"), line
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None and "=" in line, line
        key, value = line.split("=", 1)
        current.setdefault(key, []).append(value)
    return sections


def split_exec(value: str) -> list[str]:
    """Split an ExecStart value as systemd does, for our quoting (double quotes, \\ escapes)."""
    return [w.replace("%%", "%").replace("$$", "$") for w in shlex.split(value)]


@pytest.fixture
def exe(tmp_path: Path) -> Path:
    """A real executable under a folder with a space in its name."""
    path = tmp_path / "edge venv" / "bin" / "edge"
    path.parent.mkdir(parents=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


def test_unit_has_what_the_field_device_needs(exe: Path, tmp_path: Path) -> None:
    text = systemd_unit(exe, ARGS, user="edge", workdir=tmp_path, providers=["cuda", "cpu"])
    unit = parse_unit(text)
    assert set(unit) == {"Unit", "Service", "Install"}
    svc = unit["Service"]
    assert svc["Restart"] == ["on-failure"] and int(svc["RestartSec"][0]) >= 1
    assert svc["Type"] == ["simple"] and svc["User"] == ["edge"]
    assert svc["WorkingDirectory"] == [str(tmp_path)]
    assert svc["StandardOutput"] == ["journal"] and svc["KillSignal"] == ["SIGINT"]
    assert f"{PROVIDERS_ENV}=cuda,cpu" in svc["Environment"]
    assert "local-fs.target" in unit["Unit"]["After"][0]
    assert unit["Unit"]["StartLimitIntervalSec"] == ["0"]  # never give up restarting
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]
    assert split_exec(svc["ExecStart"][0]) == [str(exe), *ARGS]
    assert svc["ExecStart"][0].startswith(f'"{exe}"')  # the path with a space is quoted


def test_network_wait_is_optional(exe: Path, tmp_path: Path) -> None:
    unit = parse_unit(systemd_unit(exe, [], user="edge", workdir=tmp_path, network=True))
    assert "network-online.target" in unit["Unit"]["After"][0]
    assert unit["Unit"]["Wants"] == ["network-online.target"]
    plain = parse_unit(systemd_unit(exe, [], user="edge", workdir=tmp_path))
    assert "Wants" not in plain["Unit"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_accepts_the_unit_and_refuses_a_broken_one(exe: Path, tmp_path: Path) -> None:
    text = systemd_unit(exe, ARGS, user=getpass.getuser(), workdir=tmp_path, providers=["cpu"])
    good = install_unit(tmp_path / "overmap-edge.service", text)
    run = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(good)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    broken = tmp_path / "broken.service"
    broken.write_text(text.replace(str(exe), str(exe) + "-missing"))
    run = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(broken)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode != 0 and "not executable" in run.stderr


def test_install_is_atomic_idempotent_and_careful(exe: Path, tmp_path: Path) -> None:
    path = tmp_path / "systemd" / "overmap-edge.service"
    text = systemd_unit(exe, ["watch", "/in"], user="edge", workdir=tmp_path)
    assert install_unit(path, text) == path
    assert path.read_text() == text and oct(path.stat().st_mode & 0o777) == "0o644"
    install_unit(path, text)  # same text again: fine
    other = systemd_unit(exe, ["watch", "/other"], user="edge", workdir=tmp_path)
    with pytest.raises(ServiceError, match="exists"):
        install_unit(path, other)
    install_unit(path, other, force=True)
    assert "/other" in path.read_text()
    assert not list(path.parent.glob(".*tmp"))
    assert next_steps(path)[1] == "systemctl enable --now overmap-edge.service"


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"exe": "edge"}, "absolute"),
        ({"workdir": "here"}, "absolute"),
        ({"user": "bad user"}, "user"),
        ({"environment": {"BAD-NAME": "1"}}, "environment"),
    ],
)
def test_bad_inputs_are_refused(exe: Path, tmp_path: Path, kwargs: dict, needle: str) -> None:
    base = {"exe": exe, "user": "edge", "workdir": tmp_path}
    with pytest.raises(ServiceError, match=needle):
        systemd_unit(args=[], **(base | kwargs))


def test_quote_arg_leaves_plain_words_alone() -> None:
    assert quote_arg("--tag") == "--tag"
    assert quote_arg("/opt/edge/bin/edge") == "/opt/edge/bin/edge"
    assert quote_arg("") == '""'
    assert quote_arg(";") == '";"'
    with pytest.raises(ServiceError):
        quote_arg("two\nlines")
