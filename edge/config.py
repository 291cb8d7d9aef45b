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
  Both sections' schema lives in edge.camtrapdp_meta, beside the package writer.
- ``[taxa]``: label -> scientific name, for labels the built-in table does not know.

Relative paths (inbox, out, bundle) are taken relative to the config file's folder, so a
service started from any working directory reads the same folders.

Thresholds come from three places; :func:`resolve_thresholds` applies them in order:
bundle manifest < this file < command-line flags.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edge.camtrapdp_meta import DeploymentConfig, ProjectConfig
from edge.thresholds import KEYS as THRESHOLD_KEYS
from edge.thresholds import check_layer
from edge.triage import BURST_FRAMES


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
    lookahead: int = Field(2, ge=0, le=16)  # batches loaded ahead in other threads (0: none)
    overlays: bool = True  # keep what a review frame's overlay needs, drawn when looked at
    learn_every: int = Field(0, ge=0)  # learn from the review page's answers every N (0: no)

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
    measure: str = "energy"  # the Over-MAP measure, a name in edge.overmap.MEASURES
    # the map Over-MAP scores: Grad-CAM, or an attention head's map (bundles that have one)
    map: Literal["cam", "attention"] = "cam"

    @field_validator("measure")
    @classmethod
    def _known_measure(cls, name: str) -> str:
        from edge.overmap import MEASURES

        if name not in MEASURES:
            raise ValueError(f"must be one of {', '.join(sorted(MEASURES))}")
        return name

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

    def with_flags(self, flags: Mapping[str, Any]) -> Config:
        """This config with command-line flags laid over it (the one way flags override the
        file): `flags` maps a flag's name (FLAGS) to its value, None for "not given". The
        result is validated as the file is; a bad value is a ConfigError naming the flag.

        >>> Config().with_flags({"settle": 0.5, "copy": None}).watch.settle_seconds
        0.5
        """
        unknown = sorted(set(flags) - set(FLAGS))
        if unknown:
            raise ConfigError(f"unknown flag(s) {unknown}; known: {', '.join(FLAGS)}")
        data = self.model_dump(by_alias=False)
        for name, value in flags.items():
            if value is None:
                continue
            section, key = FLAGS[name]
            if name == "delete_empty_after":  # a retention period means: delete, after it
                data["triage"]["delete_empty"] = True
            if name == "polling":
                value = value if isinstance(value, bool) else "auto"
            data[section][key] = value
        try:
            merged = Config.model_validate(data)
        except ValidationError as e:
            names = {v: k for k, v in FLAGS.items()}
            lines = [
                f"--{names.get(tuple(err['loc'][:2]), '.'.join(map(str, err['loc'])))}".replace(
                    "_", "-"
                )
                + f" = {err.get('input')!r}: "
                + err["msg"].removeprefix("Value error, ")
                for err in e.errors()
            ]
            raise ConfigError("; ".join(lines)) from None
        return merged.model_copy(update={"source": self.source})


# A command-line flag -> the (section, key) of the config it overrides: one table, so a flag and
# its key in the file can never mean two things.
FLAGS: dict[str, tuple[str, str]] = {
    "inbox": ("watch", "inbox"), "out": ("watch", "out"), "copy": ("watch", "copy_files"),
    "polling": ("watch", "poll"), "poll_interval": ("watch", "poll_interval"),
    "rescan_interval": ("watch", "rescan_interval"), "settle": ("watch", "settle_seconds"),
    "give_up": ("watch", "give_up_seconds"), "batch": ("watch", "batch_size"),
    "max_queue": ("watch", "max_queue"), "lookahead": ("watch", "lookahead"),
    "overlays": ("watch", "overlays"), "learn_every": ("watch", "learn_every"),
    "tag": ("triage", "tag"), "empty": ("triage", "empty"),
    "empty_foreground": ("triage", "empty_foreground"),
    "delete_empty_after": ("triage", "empty_retention_days"),
    "burst_gap": ("triage", "burst_gap_seconds"), "burst_frames": ("triage", "burst_max_frames"),
    "bundle": ("runtime", "bundle"), "providers": ("runtime", "providers"),
    "threads": ("runtime", "threads"), "measure": ("runtime", "measure"),
    "map": ("runtime", "map"),
}  # fmt: skip


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
