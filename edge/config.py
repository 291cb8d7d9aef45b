"""The watcher's one configuration schema, read from a TOML file and validated at start.

Why a schema: a ranger edits this file by hand on a device in the field. A misspelt key
(`delete_emtpy = true`) must stop the watcher with the file, the key and what is allowed,
never be ignored silently. Every section forbids unknown keys.

Sections (all optional; see `examples/edge.toml` for a commented copy):

- ``[watch]``: where frames come from and go, and how the inbox is watched.
- ``[triage]``: thresholds (override the bundle's), deletion of empties, burst gap.
- ``[runtime]``: the bundle, execution providers, threads.
- ``[deployment]``: Camtrap DP deployment metadata (where the camera stands, since when),
  with per-camera overrides in ``[deployment.cameras.<camera>]``.
- ``[project]``: Camtrap DP package and project metadata (title, contributors, licences).
- ``[taxa]``: label -> scientific name, for labels the built-in table does not know.

Relative paths (inbox, out, bundle) are taken relative to the config file's folder, so a
service started from any working directory reads the same folders.

Thresholds come from three places; :func:`resolve_thresholds` applies them in order:
bundle manifest < this file < command-line flags.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edge.thresholds import KEYS as THRESHOLD_KEYS
from edge.thresholds import check_layer
from edge.triage import BURST_FRAMES
CONTRIBUTOR_ROLES = ("contact", "principalInvestigator", "rightsHolder", "publisher", "contributor")
SAMPLING_DESIGNS = (
    "simpleRandom",
    "systematicRandom",
    "clusteredRandom",
    "experimental",
    "targeted",
    "opportunistic",
)
FEATURE_TYPES = (
    "roadPaved",
    "roadDirt",
    "trailHiking",
    "trailGame",
    "roadUnderpass",
    "roadOverpass",
    "roadBridge",
    "culvert",
    "burrow",
    "nestSite",
    "carcass",
    "waterSource",
    "fruitingTree",
)
_OFFSET = re.compile(r"^(?:Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)$")


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file, the key and the fix."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WatchConfig(_Section):
    """How the inbox is watched.

    `poll`: "auto" uses filesystem events where they work and polls on network and FUSE
    mounts (SD-card readers, SMB shares), where events are unreliable.
    """

    inbox: Path | None = None
    out: Path | None = None
    copy_files: bool = Field(False, alias="copy")  # copy instead of move (keep the card intact)
    poll: Literal["auto"] | bool = "auto"
    poll_interval: float = Field(2.0, gt=0, le=3600)
    rescan_interval: float = Field(300.0, gt=0)  # full rescan catches missed events
    settle_seconds: float = Field(2.0, ge=0, le=3600)  # size unchanged this long = whole
    give_up_seconds: float = Field(600.0, gt=0)  # still growing/undecodable: quarantine
    batch_size: int = Field(16, ge=1, le=1024)
    max_queue: int = Field(2048, ge=1)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class TriageConfig(_Section):
    """Thresholds left unset (None) fall back to the bundle's.

    Deleting empties is off by default and, when on, keeps them `empty_retention_days` first:
    a wrong "empty" is then still recoverable from OUT/empty.
    """

    tag: float | None = Field(None, ge=0, le=1)
    empty: float | None = Field(None, ge=0, le=1)
    empty_foreground: float | None = Field(None, ge=0, le=1)
    delete_empty: bool = False
    empty_retention_days: float | None = Field(None, gt=0)
    burst_gap_seconds: float = Field(10.0, ge=0)
    burst_max_frames: int = Field(BURST_FRAMES, ge=1)

    @model_validator(mode="after")
    def _retention_when_deleting(self) -> TriageConfig:
        if self.delete_empty and self.empty_retention_days is None:
            raise ValueError(
                "delete_empty = true needs empty_retention_days (> 0): how many days empties"
                " stay in OUT/empty before they are deleted"
            )
        return self


class RuntimeConfig(_Section):
    """`providers`: short (trt, cuda, cpu) or ONNX Runtime names, tried in order."""

    bundle: Path | None = None
    providers: list[str] | None = None
    threads: int | None = Field(None, ge=1, le=256)

    @field_validator("providers")
    @classmethod
    def _known_providers(cls, names: list[str] | None) -> list[str] | None:
        if names is None:
            return None
        from edge.providers import resolve_name  # imports onnxruntime: only when providers set

        return [resolve_name(n) for n in names]


class ReviewConfig(_Section):
    """`edge review`: where the page listens, and its access token (required when `host` is
    not a loopback address; one is made up and printed when none is set)."""

    host: str = "127.0.0.1"
    port: int = Field(8321, ge=1, le=65535)
    token: str | None = Field(None, min_length=16)


def _check_timezone(text: str) -> str:
    if _OFFSET.match(text):
        return text
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise ValueError(
            f"{text!r} is neither an IANA zone (e.g. 'Africa/Nairobi') nor an offset ('+03:00')"
        ) from e
    return text


def tzinfo_of(text: str) -> timezone | ZoneInfo:
    """The tzinfo for an IANA zone name or a fixed offset ('Z', '+02:00')."""
    if text == "Z":
        return UTC
    if _OFFSET.match(text):
        sign = 1 if text[0] == "+" else -1
        hours, minutes = int(text[1:3]), int(text[4:6])
        return timezone(sign * timedelta(hours=hours, minutes=minutes))
    return ZoneInfo(text)


class CameraDeployment(_Section):
    """Per-camera values; anything left unset comes from ``[deployment]``."""

    deployment_id: str | None = None
    location_id: str | None = None
    location_name: str | None = None
    latitude: float | None = Field(None, ge=-90, le=90)
    longitude: float | None = Field(None, ge=-180, le=180)
    coordinate_uncertainty: int | None = Field(None, ge=1)  # metres
    camera_id: str | None = None
    camera_model: str | None = None
    camera_height: float | None = Field(None, ge=0)  # metres
    camera_tilt: int | None = Field(None, ge=-90, le=90)
    camera_heading: int | None = Field(None, ge=0, le=360)
    feature_type: str | None = None
    habitat: str | None = None
    setup_by: str | None = None
    deployment_start: datetime | date | None = None
    deployment_end: datetime | date | None = None
    comments: str | None = None

    @field_validator("deployment_start", "deployment_end", mode="before")
    @classmethod
    def _day_or_time(cls, v: Any) -> Any:
        # "2024-05-01" is a day (whole day counts), not midnight of it
        if isinstance(v, str) and len(v.strip()) == 10:
            return date.fromisoformat(v.strip())
        return v

    @field_validator("feature_type")
    @classmethod
    def _feature(cls, v: str | None) -> str | None:
        if v is not None and v not in FEATURE_TYPES:
            raise ValueError(f"must be one of {', '.join(FEATURE_TYPES)}")
        return v

    @model_validator(mode="after")
    def _ordered(self) -> CameraDeployment:
        s, e = self.deployment_start, self.deployment_end
        if s is not None and e is not None and _as_date(e) < _as_date(s):
            raise ValueError("deployment_end is before deployment_start")
        return self


def _as_date(v: datetime | date) -> date:
    return v.date() if isinstance(v, datetime) else v


class DeploymentConfig(CameraDeployment):
    """Camtrap DP deployment metadata. One deployment per camera subfolder is written; its id
    is `deployment_id` + "-" + camera unless the camera sets its own.

    Naive times (EXIF has no zone) are read in `timezone`; unset start/end come from the first
    and last frame of each camera.
    """

    timezone: str = "UTC"
    capture_method: Literal["activityDetection", "timeLapse"] = "activityDetection"
    cameras: dict[str, CameraDeployment] = Field(default_factory=dict)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        return _check_timezone(v)

    @model_validator(mode="after")
    def _cameras_ordered(self) -> DeploymentConfig:
        """A camera that sets only one date must not cross the shared other one: say so when
        the file is read, not at the first export."""
        for camera in self.cameras:
            try:
                self.for_camera(camera)
            except ValidationError:
                raise ValueError(
                    f"cameras.{camera}: its deployment_end is before its deployment_start once"
                    " the shared [deployment] dates fill in what it leaves out"
                ) from None
        return self

    def for_camera(self, camera: str) -> CameraDeployment:
        """This camera's deployment: its own values over the shared ones."""
        values = {k: getattr(self, k) for k in CameraDeployment.model_fields}
        own = self.cameras.get(camera)
        if own is not None:
            values |= own.model_dump(exclude_unset=True)
        if own is None or own.deployment_id is None:
            base = self.deployment_id or "dep"
            values["deployment_id"] = f"{base}-{camera}" if camera else base
        return CameraDeployment(**values)


class Contributor(_Section):
    title: str = Field(min_length=1)
    email: str | None = None
    path: str | None = None  # ORCID or web page
    role: str = "contributor"
    organization: str | None = None

    @field_validator("role")
    @classmethod
    def _role(cls, v: str) -> str:
        if v not in CONTRIBUTOR_ROLES:
            raise ValueError(f"must be one of {', '.join(CONTRIBUTOR_ROLES)}")
        return v


class ProjectConfig(_Section):
    """Camtrap DP package (`name`, `title`, licences) and project (`project_*`) metadata."""

    name: str | None = Field(None, pattern=r"^[a-z0-9._-]+$")  # package name
    id: str | None = None
    title: str | None = None
    description: str | None = None
    project_id: str | None = None
    project_title: str | None = None
    acronym: str | None = None
    sampling_design: str = "opportunistic"
    contributors: list[Contributor] = Field(default_factory=list)
    data_license: str | None = "CC0-1.0"
    media_license: str | None = "CC-BY-4.0"
    coordinate_precision: float | None = Field(None, gt=0)

    @field_validator("sampling_design")
    @classmethod
    def _design(cls, v: str) -> str:
        if v not in SAMPLING_DESIGNS:
            raise ValueError(f"must be one of {', '.join(SAMPLING_DESIGNS)}")
        return v


class Config(_Section):
    """The whole file. Every section has defaults, so an empty file is a valid config."""

    watch: WatchConfig = Field(default_factory=WatchConfig)
    triage: TriageConfig = Field(default_factory=TriageConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    review: ReviewConfig = Field(default_factory=ReviewConfig)
    deployment: DeploymentConfig = Field(default_factory=DeploymentConfig)
    project: ProjectConfig = Field(default_factory=ProjectConfig)
    taxa: dict[str, str] = Field(default_factory=dict)

    source: Path | None = Field(None, exclude=True)  # the file it came from, for messages


def _allowed(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys allowed where `loc` points (for an "unknown key" message)."""
    current: Any = model
    skip_key = False  # the previous field was a dict: this part is one of its keys
    for part in loc[:-1]:
        if isinstance(part, int) or skip_key:
            skip_key = False
            continue
        fields = current.model_fields
        field = fields.get(part) or next((f for f in fields.values() if f.alias == part), None)
        if field is None:
            return []
        skip_key = getattr(field.annotation, "__origin__", None) is dict
        current = _model_in(field.annotation)
        if current is None:
            return []
    return sorted(f.alias or name for name, f in current.model_fields.items() if name != "source")


def _model_in(annotation: Any) -> Any:
    """The pydantic model inside `X`, `list[X]`, `dict[str, X]` or `X | None`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _format_errors(path: Path | str, err: ValidationError) -> str:
    lines = [f"{path}: invalid config"]
    for e in err.errors():
        loc = tuple(e["loc"])
        key = ".".join(str(p) for p in loc) or "(top level)"
        if e["type"] == "extra_forbidden":
            allowed = _allowed(Config, loc)
            where = ".".join(str(p) for p in loc[:-1] if not isinstance(p, int))
            section = f"[{where}]" if where else "the top level"
            lines.append(
                f"  unknown key '{key}'; allowed in {section}: {', '.join(allowed) or 'none'}"
            )
        elif e["type"] == "value_error" and isinstance(e.get("input"), dict):
            lines.append(f"  [{key}]: {e['msg'].removeprefix('Value error, ')}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(f"  {key} = {e.get('input')!r}: {msg}")
    return "\n".join(lines)


def _resolve_paths(cfg: Config, base: Path) -> Config:
    def rel(p: Path | None) -> Path | None:
        return None if p is None or p.is_absolute() else base / p

    watch = cfg.watch.model_copy(
        update={k: (rel(getattr(cfg.watch, k)) or getattr(cfg.watch, k)) for k in ("inbox", "out")}
    )
    runtime = cfg.runtime.model_copy(
        update={"bundle": rel(cfg.runtime.bundle) or cfg.runtime.bundle}
    )
    return cfg.model_copy(update={"watch": watch, "runtime": runtime})


def parse_config(data: Mapping[str, Any], *, source: str | Path = "<config>") -> Config:
    """Validate an already-parsed mapping (e.g. from TOML); raise :class:`ConfigError`."""
    if "source" in data:  # a field of the model, not of the file
        raise ConfigError(f"{source}: unknown key 'source' at the top level")
    try:
        return Config.model_validate(dict(data))
    except ValidationError as e:
        raise ConfigError(_format_errors(source, e)) from None


def load_config(path: str | Path) -> Config:
    """Read and validate a TOML config; relative paths are resolved against its folder.

    Raises :class:`ConfigError` naming the file, the key and what is allowed, for a missing
    file, bad TOML, an unknown key or a value out of range.
    """
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not readable ({e})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    cfg = parse_config(raw, source=path)
    cfg = _resolve_paths(cfg, path.resolve().parent)
    return cfg.model_copy(update={"source": path})


def resolve_thresholds(
    bundle_thresholds: Mapping[str, float],
    config: Config,
    flags: Mapping[str, float | None],
) -> dict[str, float]:
    """The thresholds the triage uses: bundle manifest < config file < command-line flags.

    `flags` values of None mean "not given on the command line". Keys of the bundle that this
    schema does not know are kept as they are; an unknown flag is refused. Each layer is
    checked by edge.thresholds.check_layer, the rule Thresholds.merged applies; the result is
    the partial mapping the layers set (a key none sets takes edge.thresholds' default at
    triage), so the config-and-flags layer alone can outlast a bundle swapped in.

    >>> resolve_thresholds({"tag": 0.7, "empty": 0.6}, Config(), {"tag": 0.8, "empty": None})
    {'tag': 0.8, 'empty': 0.6}
    """
    unknown = sorted(set(flags) - set(THRESHOLD_KEYS))
    if unknown:
        raise ConfigError(
            f"unknown threshold flag(s) {unknown}; known: {', '.join(THRESHOLD_KEYS)}"
        )
    try:
        out = check_layer(bundle_thresholds, keep_unknown=True)
        for layer in ({k: getattr(config.triage, k) for k in THRESHOLD_KEYS}, flags):
            out |= check_layer(layer)
    except ValueError as e:  # names the key and its value
        raise ConfigError(str(e)) from None
    return out
