"""Camtrap DP metadata in the config: ``[deployment]`` (and its per-camera
``[deployment.cameras.<camera>]``) and ``[project]``, with the standard's vocabularies.

Why its own module: the Camtrap DP vocabulary (contributor roles, sampling designs, feature
types, which deployment fields exist) changes with the standard (https://camtrap-dp.tdwg.org),
not with the watcher. Here it sits beside edge.camtrapdp, which writes the package, and
edge.config only takes the two sections into its schema. Like every section of the config,
these forbid unknown keys, so a misspelt key stops the watcher instead of being ignored.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

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


class _Section(BaseModel):
    """A config section: unknown keys refused, values frozen (as edge.config's sections)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


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
