"""A Camtrap DP 1.0 data package of the watcher's results, for GBIF, Agouti, camtrapR and friends.

Camtrap DP (TDWG, https://camtrap-dp.tdwg.org) is the exchange standard for camera-trap data: a
Frictionless data package with three tables. We write:

- ``deployments.csv``: one deployment per camera subfolder, from ``[deployment]`` of the
  config (and its ``[deployment.cameras.<camera>]`` overrides); start/end default to the
  camera's first and last frame (see *Deployment dates* below).
- ``media.csv``: one row per readable frame, its time with the deployment's UTC offset.
- ``observations.csv``: media-level machine observations. A tagged frame is an animal, human or
  vehicle observation (one per known box, else one for the frame), with the scientific name when
  the label is known; a frame the triage set aside is ``blank``; a frame kept for review is
  ``unknown`` (the standard's word for a classification below the threshold), its machine label
  kept in the comments and tags; an undecided frame is ``unclassified``. The fused Over-MAP
  confidence is the `classificationProbability`. Frames of one burst share an `eventID`.
- ``datapackage.json``: package, project, spatial/temporal/taxonomic coverage.

Unreadable frames are not media of the package (they have no content to describe); they are
counted in the returned :class:`PackageReport`.

File paths must be relative to the package folder and may not climb out of it (the standard
forbids ``..``): write the package into OUT with ``paths="dest"`` (the sorted frames), or into
the inbox with ``paths="relpath"``.

Deployment dates
----------------
A deployment is the time a camera was out (deploymentStart: "date and time at which the
deployment was started", deploymentEnd likewise), and a media row is a file that deployment
recorded at its `timestamp`. So deploymentStart <= deploymentEnd, and every media timestamp of a
deployment lies within [deploymentStart, deploymentEnd]. The table schemas cannot state a rule
across two tables and frictionless does not check it, so this module does, and always writes a
package that holds to it:

- No config date: the deployment runs from its first to its last frame.
- A frame with an EXIF time outside the configured dates: either the camera's clock or the
  config is wrong, and nothing here can tell which. The frame is the camera's own record, so it
  is kept, the deployment is widened to include it, and a warning names the deployment, how many
  media fall outside, their range, the configured dates and the widened ones; the same is said
  in the deployment's `deploymentComments`, so the package's users see it too. Dropping the
  frames would lose observations; refusing would stop the whole export over one camera's clock.
  `timestampIssues` stays unset: a wrong config date is not a timestamp issue.
- A frame without EXIF time carries the file's modification time (see
  :func:`edge.exif.when_taken`), often when the file was copied. Such a time never widens a
  deployment; a frame whose file time lies outside it is left out of the package (listed in
  `skipped`) with a warning. Only when a camera has no EXIF time at all and a config date is
  missing do file times set that date, with a warning saying so. The watcher records where each
  time came from (`time_source`); in a journal from before it did, a time with a fraction of a
  second is taken for a file time, since EXIF DateTimeOriginal has whole seconds.
- deployment_start after deployment_end on one day (date-times) is refused with
  :class:`CamtrapDPError`; a camera whose own date crosses the shared one is refused when the
  config is read.

Warnings are returned in :attr:`PackageReport.warnings` and logged at WARNING on this module's
logger.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import mimetypes
import re
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any, Literal

from edge import __version__
from edge.camtrapdp_meta import CameraDeployment, tzinfo_of
from edge.config import Config
from edge.journal import Verdict
from edge.results import BundleInfo, FrameRecord, write_json_atomic
from edge.triage import burst_ids

CAMTRAP_DP_VERSION = "1.0.2"
BASE_URL = f"https://raw.githubusercontent.com/tdwg/camtrap-dp/{CAMTRAP_DP_VERSION}"
PROFILE_URL = f"{BASE_URL}/camtrap-dp-profile.json"
TABLES = ("deployments", "media", "observations")

log = logging.getLogger(__name__)

DEPLOYMENT_FIELDS = (
    "deploymentID locationID locationName latitude longitude coordinateUncertainty"
    " deploymentStart deploymentEnd setupBy cameraID cameraModel cameraDelay cameraHeight"
    " cameraDepth cameraTilt cameraHeading detectionDistance timestampIssues baitUse"
    " featureType habitat deploymentGroups deploymentTags deploymentComments"
).split()
MEDIA_FIELDS = (
    "mediaID deploymentID captureMethod timestamp filePath filePublic fileName fileMediatype"
    " exifData favorite mediaComments"
).split()
OBSERVATION_FIELDS = (
    "observationID deploymentID mediaID eventID eventStart eventEnd observationLevel"
    " observationType cameraSetupType scientificName count lifeStage sex behavior individualID"
    " individualPositionRadius individualPositionAngle individualSpeed bboxX bboxY bboxWidth"
    " bboxHeight classificationMethod classifiedBy classificationTimestamp"
    " classificationProbability observationTags observationComments"
).split()

# Common camera-trap labels -> (scientific name, rank). A config's [taxa] adds to or overrides
# this; labels found in neither keep an empty scientificName and their label in the comments.
TAXA: dict[str, tuple[str, str]] = {
    "human": ("Homo sapiens", "species"),
    "person": ("Homo sapiens", "species"),
    "cattle": ("Bos taurus", "species"),
    "cow": ("Bos taurus", "species"),
    "horse": ("Equus caballus", "species"),
    "sheep": ("Ovis aries", "species"),
    "goat": ("Capra hircus", "species"),
    "dog": ("Canis familiaris", "species"),
    "domestic dog": ("Canis familiaris", "species"),
    "cat": ("Felis catus", "species"),
    "domestic cat": ("Felis catus", "species"),
    "elk": ("Cervus canadensis", "species"),
    "red deer": ("Cervus elaphus", "species"),
    "mule deer": ("Odocoileus hemionus", "species"),
    "white-tailed deer": ("Odocoileus virginianus", "species"),
    "deer": ("Cervidae", "family"),
    "moose": ("Alces alces", "species"),
    "wild boar": ("Sus scrofa", "species"),
    "wild pig": ("Sus scrofa", "species"),
    "bobcat": ("Lynx rufus", "species"),
    "mountain lion": ("Puma concolor", "species"),
    "puma": ("Puma concolor", "species"),
    "jaguar": ("Panthera onca", "species"),
    "lion": ("Panthera leo", "species"),
    "leopard": ("Panthera pardus", "species"),
    "coyote": ("Canis latrans", "species"),
    "wolf": ("Canis lupus", "species"),
    "gray wolf": ("Canis lupus", "species"),
    "red fox": ("Vulpes vulpes", "species"),
    "gray fox": ("Urocyon cinereoargenteus", "species"),
    "black bear": ("Ursus americanus", "species"),
    "brown bear": ("Ursus arctos", "species"),
    "raccoon": ("Procyon lotor", "species"),
    "striped skunk": ("Mephitis mephitis", "species"),
    "virginia opossum": ("Didelphis virginiana", "species"),
    "opossum": ("Didelphis virginiana", "species"),
    "badger": ("Taxidea taxus", "species"),
    "squirrel": ("Sciuridae", "family"),
    "rabbit": ("Leporidae", "family"),
    "wild turkey": ("Meleagris gallopavo", "species"),
    "burrowing owl": ("Athene cunicularia", "species"),
    "bird": ("Aves", "class"),
    "rodent": ("Rodentia", "order"),
    "giraffe": ("Giraffa camelopardalis", "species"),
    "wildebeest": ("Connochaetes taurinus", "species"),
    "plains zebra": ("Equus quagga", "species"),
    "zebra": ("Equus quagga", "species"),
}


class CamtrapDPError(ValueError):
    """The package cannot be written; the message says which config key or frame is missing."""


@dataclass(frozen=True)
class PackageReport:
    """What went into the package, and what was left out and why."""

    folder: Path
    deployments: int
    media: int
    observations: int
    skipped: dict[str, str] = field(default_factory=dict)  # relpath -> reason
    warnings: tuple[str, ...] = ()  # the data disagree with the config; one line each


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="seconds")


def _local(t: datetime, tz: Any) -> datetime:
    """A naive camera time read on the deployment's clock; an aware one kept as it is."""
    return t.replace(tzinfo=tz, microsecond=0) if t.tzinfo is None else t.replace(microsecond=0)


def _bound(v: datetime | date | None, tz: Any, *, end: bool) -> datetime | None:
    if v is None:
        return None
    if isinstance(v, datetime):
        return _local(v, tz)
    return datetime.combine(v, time(23, 59, 59) if end else time(0, 0, 0), tzinfo=tz)


def _is_file_time(fr: FrameRecord) -> bool:
    """True for a time that is the file's modification time, as the watcher recorded it; for
    a journal written before it did, a time with a fraction of a second (EXIF has none)."""
    if fr.time_source is not None:
        return fr.time_source == "file"
    return fr.timestamp is not None and fr.timestamp.microsecond != 0


def _span_text(lo: datetime | None, hi: datetime | None) -> str:
    return f"{_iso(lo) if lo else 'unset'} .. {_iso(hi) if hi else 'unset'}"


@dataclass
class _Span:
    """One deployment's dates and which of its media fit in them."""

    start: datetime
    end: datetime
    keep: list[tuple[str, datetime]]  # (media id, time), by time
    left_out: dict[str, datetime]  # media id -> file time outside the deployment
    warnings: list[str]
    note: str  # for deploymentComments


def _span(
    dep_id: str,
    where: str,
    cd: CameraDeployment,
    items: list[tuple[str, datetime, bool]],
    tz: Any,
) -> _Span:
    """The deployment's start and end from the config and its media (id, time, file time?),
    following the rules in the module's docstring."""
    cfg_start = _bound(cd.deployment_start, tz, end=False)
    cfg_end = _bound(cd.deployment_end, tz, end=True)
    if cfg_start and cfg_end and cfg_start > cfg_end:
        raise CamtrapDPError(
            f"deployment {dep_id}: deployment_end {_iso(cfg_end)} is before deployment_start"
            f" {_iso(cfg_start)}; fix them in {where} of the config"
        )
    exif = [t for _, t, file_time in items if not file_time]
    files = [t for _, t, file_time in items if file_time]
    basis = exif or files
    start = cfg_start or min(basis)
    end = cfg_end or max(basis)
    warnings, note = [], ""
    outside = [t for t in exif if (cfg_start and t < cfg_start) or (cfg_end and t > cfg_end)]
    if outside:
        configured = _span_text(cfg_start, cfg_end)
        start, end = min(start, min(outside)), max(end, max(outside))
        warnings.append(
            f"deployment {dep_id}: {len(outside)} of {len(items)} media were taken"
            f" {_span_text(min(outside), max(outside))}, outside the configured deployment"
            f" ({configured}); deploymentStart and deploymentEnd widened to"
            f" {_span_text(start, end)} to include them. Check the camera's clock and"
            f" deployment_start/deployment_end in {where} of the config"
        )
        note = (
            f"deployment dates widened from the configured {configured} to include"
            f" {len(outside)} media taken {_span_text(min(outside), max(outside))}"
        )
    if not exif and (cfg_start is None or cfg_end is None):
        which = [k for k, v in (("Start", cfg_start), ("End", cfg_end)) if v is None]
        dates = " and ".join(f"deployment{k}" for k in which)
        warnings.append(
            f"deployment {dep_id}: none of its {len(files)} media has an EXIF time, so its"
            f" {dates} {'comes' if len(which) == 1 else 'come'} from file modification times"
            f" ({_span_text(min(files), max(files))}), which may be when the files were copied;"
            f" set deployment_start and deployment_end in {where} of the config"
        )
    if start > end:  # one config date, and file times on the wrong side of it
        raise CamtrapDPError(
            f"deployment {dep_id}: its {len(files)} media have no EXIF time and their file"
            f" times ({_span_text(min(files), max(files))}) lie outside the configured"
            f" deployment ({_span_text(cfg_start, cfg_end)}); set both deployment_start and"
            f" deployment_end in {where} of the config"
        )
    keep: list[tuple[str, datetime]] = []
    left_out: dict[str, datetime] = {}
    for media_id, t, file_time in items:
        if file_time and not start <= t <= end:
            left_out[media_id] = t
        else:
            keep.append((media_id, t))
    if left_out:
        lo, hi = min(left_out.values()), max(left_out.values())
        warnings.append(
            f"deployment {dep_id}: {len(left_out)} of {len(items)} media have no EXIF time and"
            f" their file times ({_span_text(lo, hi)}) lie outside the deployment"
            f" ({_span_text(start, end)}); left out of the package (listed as skipped)"
        )
    return _Span(start, end, keep, left_out, warnings, note)


def _media_id(frame: FrameRecord) -> str:
    key = f"{frame.relpath}\0{frame.sha256 or ''}".encode()
    return hashlib.sha256(key).hexdigest()[:16]


def _num(x: float | None, nd: int = 4) -> str:
    return "" if x is None else f"{round(float(x), nd):g}"


def _tags(frame: FrameRecord) -> str:
    parts = [
        ("decision", frame.decision),
        ("label", frame.label),
        ("softmax", _num(frame.softmax) or None),
        ("overmap", _num(frame.overmap) or None),
    ]
    return " | ".join(f"{k}:{v}" for k, v in parts if v not in (None, ""))


def _check_path(path: str) -> str:
    path = path.replace("\\", "/")
    if not path or path[0] in "./~" or ".." in path:
        raise CamtrapDPError(
            f"file path {path!r}: Camtrap DP needs a path relative to the package folder that"
            " does not climb out of it; write the package where the frames are"
        )
    return path


def _name_key(relpath: str) -> tuple[tuple[int, int, str], ...]:
    """The name order the watcher takes frames of one time in (edge.watch.capture_order):
    digits as numbers, so a burst's frames sharing a second keep the camera's order."""
    return tuple(
        (0, int(s), "") if s.isdigit() else (1, 0, s) for s in re.split(r"(\d+)", relpath) if s
    )


def _events(items: list[tuple[str, datetime, str]], gap: float, max_frames: int) -> dict[str, int]:
    """Burst number per media id of one camera's frames (media id, time as the watcher saw it,
    relpath): the watcher's bursts (edge.triage.burst_ids) in its capture order (time, then
    name), at most `gap` seconds apart and `max_frames` long.

    All the camera's timed frames take part, also those a deployment then leaves out, as they
    did in the triage; the times keep their fractions of a second (the media timestamps drop
    them), so a gap just over `gap` splits here as it did in the watcher.
    """
    ordered = sorted(items, key=lambda it: _name_key(it[2]))
    ids = burst_ids([("", t) for _, t, _ in ordered], gap, max_frames)
    return {media_id: b for (media_id, _, _), b in zip(ordered, ids, strict=True)}


def _deployment_row(
    dep_id: str, camera: str, cd: CameraDeployment, start: datetime, end: datetime, note: str
) -> dict[str, Any]:
    if cd.latitude is None or cd.longitude is None:
        where = f"[deployment.cameras.{camera}]" if camera else "[deployment]"
        raise CamtrapDPError(
            f"camera {camera or '(top folder)'!r}: Camtrap DP needs latitude and longitude;"
            f" set them in [deployment] or {where} of the config"
        )
    return {
        "deploymentID": dep_id,
        "locationID": cd.location_id or camera or dep_id,
        "locationName": cd.location_name or camera or "",
        "latitude": cd.latitude,
        "longitude": cd.longitude,
        "coordinateUncertainty": cd.coordinate_uncertainty or "",
        "deploymentStart": _iso(start),
        "deploymentEnd": _iso(end),
        "setupBy": cd.setup_by or "",
        "cameraID": cd.camera_id or camera,
        "cameraModel": cd.camera_model or "",
        "cameraHeight": _num(cd.camera_height, 2),
        "cameraTilt": "" if cd.camera_tilt is None else cd.camera_tilt,
        "cameraHeading": "" if cd.camera_heading is None else cd.camera_heading,
        "featureType": cd.feature_type or "",
        "habitat": cd.habitat or "",
        "deploymentComments": "; ".join(c for c in (cd.comments, note) if c),
    }


def _taxon(label: str | None, taxa: Mapping[str, str]) -> tuple[str, str] | None:
    if not label:
        return None
    if label in taxa:
        return taxa[label], ""
    if label.lower() in {k.lower() for k in taxa}:
        return next(v for k, v in taxa.items() if k.lower() == label.lower()), ""
    return TAXA.get(label.lower().replace("_", " "))


def _observations(
    frame: FrameRecord,
    media_id: str,
    dep_id: str,
    event_id: str,
    stamp: str,
    bundle: BundleInfo,
    taxa: Mapping[str, str],
    classified_at: str,
) -> list[dict[str, Any]]:
    base: dict[str, Any] = {
        "deploymentID": dep_id,
        "mediaID": media_id,
        "eventID": event_id,
        "eventStart": stamp,
        "eventEnd": stamp,
        "observationLevel": "media",
        "observationTags": _tags(frame),
    }
    if frame.decision is None or frame.decision == Verdict.QUARANTINE:
        return [base | {"observationID": f"{media_id}-0", "observationType": "unclassified"}]
    human = frame.classification_method == "human"  # answered in `edge review`
    if human:
        when = frame.classified_at
        base |= {
            "classificationMethod": "human",
            "classifiedBy": frame.classified_by or "",
            "classificationTimestamp": when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            if when
            else classified_at,
            "classificationProbability": "",
        }
    else:
        base |= {
            "classificationMethod": "machine",
            "classifiedBy": f"overmap-edge {__version__} ({bundle.name})",
            "classificationTimestamp": classified_at,
            "classificationProbability": _num(
                None if frame.confidence is None else min(1.0, max(0.0, frame.confidence))
            ),
        }
    said = f"; machine label '{frame.machine_label}'" if human and frame.machine_label else ""
    kind = bundle.kind(frame.label)
    if frame.decision == Verdict.EMPTY or (frame.decision == Verdict.TAGGED and kind == "empty"):
        row = {"observationComments": f"empty by a person{said}"} if human else {}
        return [base | row | {"observationID": f"{media_id}-0", "observationType": "blank"}]
    if frame.decision == Verdict.REVIEW:
        note = f"machine label '{frame.label}' below the tag threshold; kept for review"
        row = {"observationType": "unknown", "observationComments": note}
        return [base | row | {"observationID": f"{media_id}-0"}]
    # a person is Homo sapiens whatever the class is called ("scuba_diver", "groom")
    taxon = (
        _taxon(frame.label, taxa)
        if kind == "animal"
        else _taxon(frame.label, taxa) or TAXA["human"]
        if kind == "human"
        else None
    )
    row = {
        "observationType": kind,
        "scientificName": taxon[0] if taxon else "",
        "observationComments": (
            f"label '{frame.label}' by a person{said}"
            if human
            else ""
            if taxon
            else f"machine label '{frame.label}'"
        ),
    }
    if not frame.boxes:
        return [base | row | {"observationID": f"{media_id}-0"}]
    return [
        base
        | row
        | {
            "observationID": f"{media_id}-{k}",
            "count": 1,
            "bboxX": _num(x),
            "bboxY": _num(y),
            "bboxWidth": _num(max(w, 1e-4)),
            "bboxHeight": _num(max(h, 1e-4)),
        }
        for k, (x, y, w, h) in enumerate(frame.boxes)
    ]


def _write_csv(path: Path, fields: list[str], rows: Iterable[Mapping[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="raise", lineterminator="\n")
        w.writeheader()
        for row in rows:
            w.writerow({k: row.get(k, "") for k in fields})
    tmp.replace(path)


def _descriptor(
    config: Config,
    deployments: list[dict[str, Any]],
    taxonomic: list[dict[str, Any]],
    created: datetime,
) -> dict[str, Any]:
    p, d = config.project, config.deployment
    if not p.contributors:
        raise CamtrapDPError(
            "Camtrap DP needs at least one contributor: add [[project.contributors]] with a"
            " title (and role) to the config"
        )
    name = p.name or "overmap-edge-" + (d.deployment_id or "camera-traps").lower()
    name = "".join(c if (c.isascii() and c.isalnum()) or c in "._-" else "-" for c in name.lower())
    lats = [r["latitude"] for r in deployments]
    lons = [r["longitude"] for r in deployments]
    w, e, s, n = min(lons), max(lons), min(lats), max(lats)
    resources = [
        {
            "name": t,
            "path": f"{t}.csv",
            "profile": "tabular-data-resource",
            "format": "csv",
            "mediatype": "text/csv",
            "encoding": "utf-8",
            "schema": f"{BASE_URL}/{t}-table-schema.json",
        }
        for t in TABLES
    ]
    project: dict[str, Any] = {
        "title": p.project_title or p.title or "Camera-trap triage with overmap-edge",
        "samplingDesign": p.sampling_design,
        "captureMethod": [d.capture_method],
        "individualAnimals": False,
        "observationLevel": ["media"],
    }
    for key, value in (("id", p.project_id), ("acronym", p.acronym)):
        if value:
            project[key] = value
    desc: dict[str, Any] = {
        "resources": resources,
        "profile": PROFILE_URL,
        "name": name,
        "id": p.id or str(uuid.uuid5(uuid.NAMESPACE_URL, f"overmap-edge:{name}")),
        "created": created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "title": p.title or f"Camera-trap observations: {name}",
        "contributors": [c.model_dump(exclude_none=True) for c in p.contributors],
        "sources": [{"title": "overmap-edge", "version": __version__}],
        "project": project,
        "spatial": {
            "type": "Polygon",
            "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]],
        },
        "temporal": {
            "start": min(r["deploymentStart"] for r in deployments)[:10],
            "end": max(r["deploymentEnd"] for r in deployments)[:10],
        },
        "taxonomic": taxonomic,
    }
    if p.description:
        desc["description"] = p.description
    if p.data_license and p.media_license:
        desc["licenses"] = [
            {"name": p.data_license, "scope": "data"},
            {"name": p.media_license, "scope": "media"},
        ]
    if p.coordinate_precision:
        desc["coordinatePrecision"] = p.coordinate_precision
    return desc


def write_camtrap_dp(
    folder: str | Path,
    frames: Iterable[FrameRecord],
    config: Config,
    *,
    bundle_info: BundleInfo,
    paths: Literal["relpath", "dest"] = "dest",
    created: datetime | None = None,
) -> PackageReport:
    """Write datapackage.json and the three CSV tables into `folder`; return what went in.

    `config` gives the deployment, project and taxa sections and `triage.burst_gap_seconds`
    and `burst_max_frames` (frames of a camera closer than this share an eventID, as many as
    that at most). Raises :class:`CamtrapDPError`
    when the config lacks what the standard requires (coordinates, a contributor), when its
    deployment dates are out of order, or when a file path would leave the package folder.

    Every deployment written has deploymentStart <= deploymentEnd and holds all its media's
    timestamps. Where the frames' times disagree with the configured dates, the deployment is
    widened to include frames with an EXIF time, and frames with only a file time outside it are
    left out (see the module's docstring for why); each case is one line of the report's
    `warnings`, also logged at WARNING.
    """
    folder = Path(folder)
    now = (created or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    classified_at = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    dep_cfg = config.deployment
    tz = tzinfo_of(dep_cfg.timezone)
    taxa = dict(config.taxa)

    skipped: dict[str, str] = {}
    unique: dict[str, FrameRecord] = {}
    for fr in frames:
        if fr.failure is not None:
            skipped[fr.relpath] = f"unreadable: {fr.failure}"
        elif fr.timestamp is None:
            skipped[fr.relpath] = "no timestamp (Camtrap DP requires one)"
        else:
            unique[_media_id(fr)] = fr

    by_camera: dict[str, list[tuple[str, datetime, bool]]] = defaultdict(list)
    seen_at: dict[str, datetime] = {}  # media id -> its time as the triage saw it (on one clock)
    for media_id, fr in unique.items():
        assert fr.timestamp is not None
        t = fr.timestamp
        by_camera[fr.camera].append((media_id, _local(t, tz), _is_file_time(fr)))
        seen_at[media_id] = t.replace(tzinfo=tz) if t.tzinfo is None else t

    deployments, media, observations = [], [], []
    warnings: list[str] = []
    taxonomic: dict[str, dict[str, Any]] = {}
    for camera in sorted(by_camera):
        where = f"[deployment.cameras.{camera}]" if camera else "[deployment]"
        cd = dep_cfg.for_camera(camera)  # dates in order: checked when the config was read
        dep_id = cd.deployment_id or camera
        timed = sorted(by_camera[camera], key=lambda it: (it[1], it[0]))
        span = _span(dep_id, f"[deployment] or {where}" if camera else where, cd, timed, tz)
        warnings.extend(span.warnings)
        for media_id, t in span.left_out.items():
            skipped[unique[media_id].relpath] = (
                f"no EXIF time; its file time {_iso(t)} lies outside deployment {dep_id}"
                f" ({_span_text(span.start, span.end)})"
            )
        deployments.append(_deployment_row(dep_id, camera, cd, span.start, span.end, span.note))
        items = span.keep
        events = _events(
            [(m, seen_at[m], unique[m].relpath) for m, _, _ in timed],
            config.triage.burst_gap_seconds,
            config.triage.burst_max_frames,
        )
        number: dict[int, int] = {}  # burst -> event number, from 0 in time order of the kept
        for media_id, stamp in items:
            fr = unique[media_id]
            path = _check_path(fr.dest if paths == "dest" and fr.dest else fr.relpath)
            media.append(
                {
                    "mediaID": media_id,
                    "deploymentID": dep_id,
                    "captureMethod": dep_cfg.capture_method,
                    "timestamp": _iso(stamp),
                    "filePath": path,
                    "filePublic": "false",
                    "fileName": path.rsplit("/", 1)[-1],
                    "fileMediatype": mimetypes.guess_type(path)[0] or "image/jpeg",
                }
            )
            event_id = f"{dep_id}-e{number.setdefault(events[media_id], len(number)):05d}"
            rows = _observations(
                fr, media_id, dep_id, event_id, _iso(stamp), bundle_info, taxa, classified_at
            )
            observations.extend(rows)
            for row in rows:
                sci = row.get("scientificName")
                if sci and sci not in taxonomic:
                    entry: dict[str, Any] = {"scientificName": sci}
                    known = TAXA.get((fr.label or "").lower())
                    if known and known[0] == sci:
                        entry["taxonRank"] = known[1]
                    if fr.label:
                        entry["vernacularNames"] = {"eng": fr.label}
                    taxonomic[sci] = entry

    if not deployments:
        raise CamtrapDPError("no readable frame with a timestamp: nothing to package")
    descriptor = _descriptor(
        config, deployments, sorted(taxonomic.values(), key=lambda t: t["scientificName"]), now
    )
    folder.mkdir(parents=True, exist_ok=True)
    _write_csv(folder / "deployments.csv", DEPLOYMENT_FIELDS, deployments)
    _write_csv(folder / "media.csv", MEDIA_FIELDS, media)
    _write_csv(folder / "observations.csv", OBSERVATION_FIELDS, observations)
    write_json_atomic(folder / "datapackage.json", descriptor)
    for line in warnings:
        log.warning("Camtrap DP: %s", line)
    return PackageReport(
        folder=folder,
        deployments=len(deployments),
        media=len(media),
        observations=len(observations),
        skipped=skipped,
        warnings=tuple(warnings),
    )


def local_schema_descriptor(folder: str | Path, schema_dir: str | Path) -> dict[str, Any]:
    """The package's descriptor with each table schema read from `schema_dir` (offline copies
    of the TDWG files) instead of its URL, for validation where the URLs cannot be reached."""
    desc = json.loads((Path(folder) / "datapackage.json").read_text(encoding="utf-8"))
    for res in desc["resources"]:
        if res.get("name") in TABLES:
            local = Path(schema_dir) / f"{res['name']}-table-schema.json"
            res["schema"] = json.loads(local.read_text(encoding="utf-8"))
    desc.pop("profile", None)  # the Camtrap DP profile is a JSON Schema: check it apart
    return desc
