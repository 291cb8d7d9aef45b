"""A systemd unit that keeps the watcher running on the device across crashes and reboots.

A camera-trap box sits unattended for weeks. systemd restarts the watcher when it fails
(`Restart=on-failure`, and never stops retrying: `StartLimitIntervalSec=0`) and starts it at
boot once local disks are mounted. The journal makes restarts safe: unfinished frames resume.
Output goes to the system journal (`journalctl -u overmap-edge`).

The watcher is stopped with SIGINT, which Python turns into KeyboardInterrupt, so it finishes
the batch in hand and closes the journal instead of being cut off.

`ExecStart=` follows systemd's own quoting: arguments with spaces or quotes are double-quoted
with `\\` escapes, and `%` and `$` are doubled so systemd does not expand them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

UNIT_NAME = "overmap-edge.service"
SYSTEM_DIR = Path("/etc/systemd/system")
PROVIDERS_ENV = "OVERMAP_PROVIDERS"  # read by edge.providers
_PLAIN = re.compile(r"^[A-Za-z0-9_@%+=:,./-]+$")
_USER = re.compile(r"^[a-z_][a-z0-9_-]*$", re.IGNORECASE)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ServiceError(ValueError):
    """The unit cannot be written as asked; the message says why."""


def _escape(text: str) -> str:
    """Keep systemd from expanding specifiers (%h) and variables ($HOME) in a literal."""
    return text.replace("%", "%%").replace("$", "$$")


def quote_arg(arg: str) -> str:
    """One ExecStart word, quoted the way systemd splits command lines."""
    if "\n" in arg or "\0" in arg:
        raise ServiceError(f"argument {arg!r}: newlines and NUL cannot go into a unit file")
    text = _escape(arg)
    if text and _PLAIN.match(text) and text != ";":
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def systemd_unit(
    exe: str | Path,
    args: Sequence[str],
    *,
    user: str,
    workdir: str | Path,
    providers: Sequence[str] | None = None,
    environment: Mapping[str, str] | None = None,
    network: bool = False,
    restart_sec: int = 10,
    description: str = "overmap-edge camera-trap watcher",
) -> str:
    """The text of a service unit that runs `exe args...` as `user` in `workdir`.

    `exe` and `workdir` must be absolute (systemd does not search PATH reliably across
    versions, and a unit has no current directory). `providers` goes to the environment
    variable the runtime reads (OVERMAP_PROVIDERS=cuda,cpu). `network`: also wait for the
    network (an inbox on a network share).

    >>> print(systemd_unit("/opt/edge/.venv/bin/edge", ["watch", "/data/in"], user="edge",
    ...                    workdir="/opt/edge").splitlines()[0])
    [Unit]
    """
    exe, workdir = Path(exe), Path(workdir)
    if not exe.is_absolute():
        raise ServiceError(f"executable {exe}: give an absolute path (e.g. `which edge`)")
    if not workdir.is_absolute():
        raise ServiceError(f"working directory {workdir}: give an absolute path")
    if not _USER.match(user):
        raise ServiceError(f"user {user!r}: not a valid user name")
    if restart_sec < 1:
        raise ServiceError("restart_sec must be at least 1 second")
    env = {"PYTHONUNBUFFERED": "1"}  # log lines reach the journal as they are written
    if providers:
        env[PROVIDERS_ENV] = ",".join(providers)
    env |= dict(environment or {})
    for name in env:
        if not _ENV_NAME.match(name):
            raise ServiceError(f"environment variable name {name!r} is not valid")

    after = "local-fs.target" + (" network-online.target" if network else "")
    lines = [
        "[Unit]",
        f"Description={_escape(description)}",
        f"After={after}",
        *(["Wants=network-online.target"] if network else []),
        "StartLimitIntervalSec=0",
        "",
        "[Service]",
        "Type=simple",
        f"User={user}",
        f"WorkingDirectory={_escape(str(workdir))}",
        *(f"Environment={quote_arg(f'{k}={v}')}" for k, v in env.items()),
        "ExecStart=" + " ".join(quote_arg(a) for a in (str(exe), *map(str, args))),
        "Restart=on-failure",
        f"RestartSec={restart_sec}",
        "KillSignal=SIGINT",
        "TimeoutStopSec=60",
        "StandardOutput=journal",
        "StandardError=journal",
        "SyslogIdentifier=overmap-edge",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ]
    return "\n".join(lines)


def install_unit(path: str | Path, text: str, *, force: bool = False) -> Path:
    """Write the unit to `path` (e.g. /etc/systemd/system/overmap-edge.service), mode 0644.

    Refuses to replace a different unit already there unless `force`; writing the same text
    again is a no-op. Written through a temporary file and a rename, so systemd never reads
    half a unit. Afterwards: `systemctl daemon-reload && systemctl enable --now <name>`.
    """
    path = Path(path)
    if path.exists():
        if path.read_text(encoding="utf-8") == text:
            return path
        if not force:
            raise ServiceError(f"{path} exists with other content; pass force to replace it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.chmod(tmp, 0o644)
        tmp.replace(path)
    except PermissionError as e:
        raise ServiceError(f"{path}: permission denied; run the install with sudo") from e
    return path


def next_steps(path: str | Path) -> list[str]:
    """The commands that load and start an installed unit, to print for the operator."""
    name = Path(path).name
    return [
        "systemctl daemon-reload",
        f"systemctl enable --now {name}",
        f"journalctl -u {name} -f",
    ]
