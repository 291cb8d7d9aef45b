"""A MegaDetector results file, so Timelapse, AddaxAI and the MegaDetector tools read our output.

The format (https://lila.science/megadetector-output-format, format version 1.6) is the lingua
franca of camera-trap software: `info`, `detection_categories`, `classification_categories`,
and one entry per image with its `detections` (category, conf, normalised [x, y, w, h] box,
`classifications` as [[class id, probability], ...] in descending order).

We run a whole-frame classifier, not a detector. So a frame gets the boxes the caller knows
(e.g. from a detector run upstream); without any, a non-empty frame gets one whole-image
detection [0, 0, 1, 1] whose category follows the label (human -> person, vehicle -> vehicle,
anything else -> animal) and whose conf is the fused Over-MAP confidence, so a threshold in
Timelapse acts as our triage threshold. An empty frame has an empty `detections` list. An
unreadable frame has a `failure` string and `detections` null, as the format asks.

Our own measures ride along as extra per-image keys (`overmap`, `fused_confidence`, `softmax`,
`decision`, `label`, `datetime`), which the format allows and readers ignore.

:class:`FrameRecord` and :class:`BundleInfo` are also what `edge.camtrapdp` reads.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from edge import __version__
from edge.journal import Verdict
from edge.kinds import Kind, is_vehicle, kind_of

FORMAT_VERSION = "1.6"
DETECTION_CATEGORIES = {"1": "animal", "2": "person", "3": "vehicle"}
ANIMAL, PERSON, VEHICLE = "1", "2", "3"
WHOLE_IMAGE = (0.0, 0.0, 1.0, 1.0)

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class FrameRecord:
    """What the watcher knows about one frame once it is decided (or quarantined).

    `relpath`: path under the inbox, '/'-separated. `dest`: where it was sorted, relative to
    OUT. `timestamp`: EXIF DateTimeOriginal, else the file's mtime; naive means camera clock;
    `time_source` says which ("exif", "file"; None when not recorded, as in older journals).
    `failure`: why the frame could not be read (then the model fields are None).
    `boxes`: normalised (x, y, w, h), top-left origin, when known. `top`: (class index,
    probability) pairs in descending order when the caller kept more than the top-1.
    """

    relpath: str
    camera: str = ""
    sha256: str | None = None
    timestamp: datetime | None = None
    time_source: str | None = None
    width: int | None = None
    height: int | None = None
    label: str | None = None
    class_index: int | None = None
    softmax: float | None = None
    overmap: float | None = None
    confidence: float | None = None  # fused confidence
    decision: str | None = None  # empty | tagged | review | quarantine
    failure: str | None = None
    dest: str | None = None
    boxes: tuple[Box, ...] = ()
    top: tuple[tuple[int, float], ...] = ()
    # "human" once a person answered the frame in `edge review`: `label` and `decision` are
    # then theirs, `machine_label` what the model said, `classified_by`/`_at` who and when
    classification_method: Literal["machine", "human"] = "machine"
    classified_by: str | None = None
    classified_at: datetime | None = None
    machine_label: str | None = None


@dataclass(frozen=True)
class BundleInfo:
    """The bundle facts the exports cite: which classifier, which classes mean what."""

    name: str  # the classifier's name, e.g. "lite0-mlwic"
    version: str = ""  # the bundle's identity, e.g. its creation time
    classes: tuple[str, ...] = ()
    empty_classes: tuple[str, ...] = ()
    human_classes: tuple[str, ...] = ()
    vehicle_classes: tuple[str, ...] = field(default=())
    segmenter: str = ""
    thresholds: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def from_manifest(cls, manifest: Any) -> BundleInfo:
        """From an `edge.bundle.Manifest`; vehicle classes are found by name."""
        c = manifest.classifier
        return cls(
            name=c.name,
            version=manifest.versions.get("bundle", manifest.created),
            classes=tuple(c.classes),
            empty_classes=tuple(c.empty_classes),
            human_classes=tuple(c.human_classes),
            vehicle_classes=tuple(n for n in c.classes if is_vehicle(n)),
            segmenter=manifest.segmenter.name,
            thresholds=dict(manifest.thresholds),
        )

    def kind(self, label: str | None) -> Kind:
        """'empty', 'human', 'vehicle' or 'animal' for a class name (see `edge.kinds`)."""
        return kind_of(
            label, empty=self.empty_classes, human=self.human_classes, vehicle=self.vehicle_classes
        )


def is_empty(frame: FrameRecord, bundle: BundleInfo) -> bool:
    """Empty when the triage set it aside or the classifier called an empty class."""
    return frame.decision == Verdict.EMPTY or bundle.kind(frame.label) == "empty"


def _conf(x: float | None) -> float:
    # the validator insists on a float; four decimals like MegaDetector's own output
    return round(float(x if x is not None else 0.0), 4)


def _classifications(frame: FrameRecord, bundle: BundleInfo) -> list[list[Any]]:
    if frame.classification_method == "human":  # a person's word: certain, the bundle's class
        names = list(bundle.classes)
        return [[str(names.index(frame.label)), 1.0]] if frame.label in names else []
    pairs = list(frame.top)
    if not pairs and frame.class_index is not None:
        pairs = [(frame.class_index, frame.softmax if frame.softmax is not None else 0.0)]
    pairs.sort(key=lambda p: -p[1])
    n = len(bundle.classes)
    return [[str(i), _conf(p)] for i, p in pairs if 0 <= i < n]


def _category(frame: FrameRecord, bundle: BundleInfo) -> str:
    return {"human": PERSON, "vehicle": VEHICLE}.get(bundle.kind(frame.label), ANIMAL)


def image_entry(
    frame: FrameRecord, bundle: BundleInfo, *, paths: Literal["relpath", "dest"] = "relpath"
) -> dict[str, Any]:
    """One `images[]` entry; `paths` picks the inbox path or the sorted one (under OUT)."""
    name = frame.dest if paths == "dest" and frame.dest else frame.relpath
    entry: dict[str, Any] = {"file": name.replace("\\", "/")}
    if frame.failure is not None:
        entry["failure"] = frame.failure
        entry["detections"] = None
        return entry
    detections: list[dict[str, Any]] = []
    if not is_empty(frame, bundle):
        category = _category(frame, bundle)
        classifications = _classifications(frame, bundle)
        for box in frame.boxes or (WHOLE_IMAGE,):
            det: dict[str, Any] = {
                "category": category,
                "conf": _conf(1.0 if frame.classification_method == "human" else frame.confidence),
                "bbox": [round(float(v), 4) for v in box],
            }
            if classifications:
                det["classifications"] = classifications
            detections.append(det)
    entry["detections"] = detections
    extra = {
        "label": frame.label,
        "decision": frame.decision,
        "softmax": frame.softmax,
        "overmap": frame.overmap,
        "fused_confidence": frame.confidence,
        "datetime": frame.timestamp.isoformat(timespec="seconds") if frame.timestamp else None,
        "width": frame.width,
        "height": frame.height,
    }
    if frame.classification_method == "human":  # MegaDetector readers ignore extra keys
        extra |= {
            "classification_method": "human",
            "classified_by": frame.classified_by,
            "machine_label": frame.machine_label,
        }
    for key, value in extra.items():
        if value is not None:
            entry[key] = round(value, 4) if isinstance(value, float) else value
    return entry


def md_results(
    frames: Iterable[FrameRecord],
    *,
    bundle: BundleInfo,
    thresholds: Mapping[str, float] | None = None,
    completion_time: datetime | None = None,
    paths: Literal["relpath", "dest"] = "relpath",
) -> dict[str, Any]:
    """The results as a dict in MegaDetector format `FORMAT_VERSION`.

    `thresholds`: the ones the triage used; `tag` becomes the `typical_detection_threshold`
    recommended to Timelapse, since our conf is the fused confidence the triage compares.
    """
    when = (completion_time or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M:%S")
    used = dict(thresholds if thresholds is not None else bundle.thresholds)
    tool = f"overmap-edge {__version__}"
    info: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "detector": f"{tool} (no detector: whole-image boxes unless known)",
        "detection_completion_time": when,
        "classifier": bundle.name,
        "classification_completion_time": when,
        "overmap_edge": {
            "version": __version__,
            "bundle": {"classifier": bundle.name, "version": bundle.version},
            "segmenter": bundle.segmenter,
            "thresholds": used,
            "conf": "fused Over-MAP confidence (0..1)",
        },
    }
    if "tag" in used:
        info["detector_metadata"] = {
            "typical_detection_threshold": float(used["tag"]),
            "conservative_detection_threshold": float(used["tag"]) / 2,
        }
    return {
        "info": info,
        "detection_categories": dict(DETECTION_CATEGORIES),
        "classification_categories": {str(i): name for i, name in enumerate(bundle.classes)},
        "images": [image_entry(f, bundle, paths=paths) for f in frames],
    }


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """Write JSON via a temporary file and a rename: a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, ensure_ascii=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException:  # a full disk, a kill: leave no half file behind
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_md_results(
    path: str | Path,
    frames: Sequence[FrameRecord] | Iterable[FrameRecord],
    *,
    bundle: BundleInfo,
    thresholds: Mapping[str, float] | None = None,
    completion_time: datetime | None = None,
    paths: Literal["relpath", "dest"] = "relpath",
) -> Path:
    """Write a MegaDetector results file atomically (tmp + replace); return its path.

    File names must be relative to the folder Timelapse opens: `paths="relpath"` for the
    inbox (frames copied, inbox intact), `paths="dest"` for OUT (the sorted frames).
    """
    data = md_results(
        frames,
        bundle=bundle,
        thresholds=thresholds,
        completion_time=completion_time,
        paths=paths,
    )
    return write_json_atomic(path, data)
