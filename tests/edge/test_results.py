"""The MegaDetector results file, checked against the format's rules on real camera-trap frames.

`check_md_format` restates the rules of https://lila.science/megadetector-output-format (and of
MegaDetector's `validate_batch_results.py`, v10.0.28); MegaDetector's own validator runs too,
from the `megadetector-utils` package (the `dev` extra installs it).
"""

from __future__ import annotations

import csv
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from edge.results import (
    FORMAT_VERSION,
    BundleInfo,
    FrameRecord,
    md_results,
    write_md_results,
)

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"

CAMTRAP = SHARED / "camtrap"
BUNDLE = BundleInfo(
    name="lite0-peru",
    version="2026-05-01T00:00:00+00:00",
    classes=("empty", "animal", "person", "vehicle"),
    empty_classes=("empty",),
    human_classes=("person",),
    vehicle_classes=("vehicle",),
    segmenter="lraspp-lite",
    thresholds={"tag": 0.7, "empty": 0.6, "empty_foreground": 0.02},
)


def check_md_format(d: Any) -> list[str]:
    """Every rule of the format doc and validator that applies to still images."""
    errors: list[str] = []
    if not isinstance(d, dict):
        return ["not a dict"]
    for key in ("info", "images", "detection_categories"):
        if key not in d:
            errors.append(f"missing {key}")
    extra = set(d) - {
        "info",
        "images",
        "detection_categories",
        "classification_categories",
        "classification_category_descriptions",
    }
    if extra:
        errors.append(f"non-standard top-level keys {extra}")
    info = d.get("info", {})
    fv = info.get("format_version")
    if not isinstance(fv, str) or float(fv) < 1.3:
        errors.append(f"format_version {fv!r} must be a string-formatted float >= 1.3")
    for name in ("detection_categories", "classification_categories"):
        for k, v in d.get(name, {}).items():
            if not (isinstance(k, str) and k.isdigit()):
                errors.append(f"{name} id {k!r} is not a string-formatted int")
            if not isinstance(v, str) or not v.strip():
                errors.append(f"{name}[{k}] name is blank")
    dcat, ccat = d.get("detection_categories", {}), d.get("classification_categories", {})
    if not isinstance(d.get("images"), list):
        return errors + ["images is not a list"]
    for im in d["images"]:
        f = im.get("file")
        if not isinstance(f, str) or "\\" in f:
            errors.append(f"bad file name {f!r}")
        if im.get("failure") is not None:
            if not isinstance(im["failure"], str):
                errors.append(f"{f}: failure is not a string")
            if im.get("detections") is not None:
                errors.append(f"{f}: failure with a non-null detections list")
            continue
        dets = im.get("detections")
        if not isinstance(dets, list):
            errors.append(f"{f}: detections must be a list for a processed image")
            continue
        for det in dets:
            if det.get("category") not in dcat:
                errors.append(f"{f}: unmapped detection category {det.get('category')!r}")
            if not isinstance(det.get("conf"), float) or not 0 <= det["conf"] <= 1:
                errors.append(f"{f}: conf {det.get('conf')!r} is not a float in 0..1")
            box = det.get("bbox")
            if not (isinstance(box, list) and len(box) == 4):
                errors.append(f"{f}: bbox {box!r} is not [x, y, w, h]")
            elif not (
                all(0 <= v <= 1 for v in box) and box[0] + box[2] <= 1 and box[1] + box[3] <= 1
            ):
                errors.append(f"{f}: bbox {box} is not normalised")
            probs = []
            for c in det.get("classifications") or []:
                if not (isinstance(c[0], str) and c[0] in ccat):
                    errors.append(f"{f}: classification category {c[0]!r} not listed")
                if not isinstance(c[1], float | int):
                    errors.append(f"{f}: classification probability {c[1]!r}")
                probs.append(c[1])
            if probs != sorted(probs, reverse=True):
                errors.append(f"{f}: classifications are not in descending order")
    return errors


def real_frames(n: int = 20) -> list[FrameRecord]:
    """Peru S90 frames (two cameras, day and IR night): their labels and boxes from the data
    set, EXIF time and size read from the files, model outputs set by a simple rule."""
    from PIL import Image

    rows = [r for r in csv.DictReader(open(CAMTRAP / "labels.csv", encoding="utf-8"))]
    rows = [r for r in rows if r["source"] == "peru_s90_animl"]
    people = [r for r in rows if r["label"] == "person"]
    rows = rows[: n - len(people)] + people
    frames = []
    for i, r in enumerate(rows):
        rel = r["file"].removeprefix("peru_s90_animl/")
        with Image.open(CAMTRAP / r["file"]) as im:
            stamp = im.getexif().get_ifd(0x8769).get(36867)
            width, height = im.size
        label = r["label"]
        boxes = tuple(tuple(float(v) for v in b.split(",")) for b in r["bbox"].split(";") if b)
        conf = 0.5 + 0.45 * ((i * 7) % 10) / 10
        decision = "empty" if label == "empty" else ("tagged" if conf >= 0.7 else "review")
        frames.append(
            FrameRecord(
                relpath=rel,
                camera=rel.split("/")[0],
                sha256=f"{i:064x}",
                timestamp=datetime.strptime(stamp, "%Y:%m:%d %H:%M:%S") if stamp else None,
                width=width,
                height=height,
                label=label,
                class_index=BUNDLE.classes.index(label),
                softmax=min(1.0, conf + 0.03),
                overmap=conf - 0.1,
                confidence=conf,
                decision=decision,
                dest=f"{decision}/{rel}",
                boxes=boxes if i % 2 == 0 else (),  # half with known boxes, half without
            )
        )
    frames.append(
        FrameRecord(relpath="S90_SDZG2/broken.JPG", camera="S90_SDZG2", failure="truncated JPEG")
    )
    return frames


@pytest.fixture(scope="module")
def frames() -> list[FrameRecord]:
    return real_frames()


def test_real_frames_give_a_valid_results_file(tmp_path: Path, frames: list[FrameRecord]) -> None:
    path = write_md_results(tmp_path / "md.json", frames, bundle=BUNDLE)
    d = json.loads(path.read_text(encoding="utf-8"))
    assert check_md_format(d) == []
    assert d["info"]["format_version"] == FORMAT_VERSION == "1.6"
    assert d["classification_categories"] == {
        "0": "empty",
        "1": "animal",
        "2": "person",
        "3": "vehicle",
    }
    assert d["info"]["detector_metadata"]["typical_detection_threshold"] == 0.7
    assert not list(tmp_path.glob(".*tmp"))  # the temporary file was renamed away
    by_file = {im["file"]: im for im in d["images"]}
    assert len(by_file) == len(frames)
    for fr in frames[:-1]:
        im = by_file[fr.relpath]
        assert im["fused_confidence"] == pytest.approx(fr.confidence, abs=1e-4)
        assert im["decision"] == fr.decision and im["overmap"] == pytest.approx(fr.overmap)
        if fr.label == "empty":
            assert im["detections"] == []
            continue
        want = "2" if fr.label == "person" else "1"
        boxes = [list(b) for b in fr.boxes] or [[0.0, 0.0, 1.0, 1.0]]
        got = [v for det in im["detections"] for v in det["bbox"]]
        assert got == pytest.approx([v for b in boxes for v in b], abs=1e-4)
        for det in im["detections"]:
            assert det["category"] == want
            assert det["conf"] == pytest.approx(fr.confidence, abs=1e-4)
            assert det["classifications"] == [[str(fr.class_index), round(fr.softmax, 4)]]
    broken = by_file["S90_SDZG2/broken.JPG"]
    assert broken["failure"] == "truncated JPEG" and broken["detections"] is None


def test_kinds_of_frames_and_top_k(frames: list[FrameRecord]) -> None:
    car = FrameRecord(
        "c/v.jpg", label="vehicle", class_index=3, confidence=0.9, top=((2, 0.05), (3, 0.9))
    )
    review_empty = FrameRecord("c/e.jpg", label="animal", class_index=1, decision="empty")
    d = md_results([car, review_empty], bundle=BUNDLE)
    assert check_md_format(d) == []
    det = d["images"][0]["detections"][0]
    assert det["category"] == "3"
    assert det["classifications"] == [["3", 0.9], ["2", 0.05]]  # sorted, highest first
    assert d["images"][1]["detections"] == []  # the triage set it aside as empty


def test_paths_can_point_into_out(frames: list[FrameRecord]) -> None:
    d = md_results(frames, bundle=BUNDLE, paths="dest")
    files = [im["file"] for im in d["images"]]
    assert files[0] == frames[0].dest
    assert files[-1] == frames[-1].relpath  # no dest: falls back to the inbox path


def test_the_format_check_catches_broken_files(frames: list[FrameRecord]) -> None:
    good = md_results(frames, bundle=BUNDLE)
    assert check_md_format(good) == []
    animal = next(i for i, im in enumerate(good["images"]) if im.get("detections"))
    broken = json.loads(json.dumps(good))
    broken["images"][animal]["detections"][0]["category"] = "7"
    broken["images"][-1]["detections"] = []  # failure with an empty list
    broken["info"]["format_version"] = 1.6
    errors = check_md_format(broken)
    assert any("unmapped" in e for e in errors)
    assert any("failure with a non-null" in e for e in errors)
    assert any("format_version" in e for e in errors)


def test_megadetector_own_validator_accepts_the_file_and_refuses_a_broken_one(
    tmp_path: Path, frames: list[FrameRecord]
) -> None:
    # not importorskip: a missing dev extra must fail here, not skip the check for ever
    from megadetector.postprocessing import validate_batch_results as vbr

    path = write_md_results(tmp_path / "md.json", frames, bundle=BUNDLE)
    result = vbr.validate_batch_results(str(path))["validation_results"]
    assert result["errors"] == [] and result["warnings"] == []
    broken = json.loads(path.read_text(encoding="utf-8"))
    animal = next(im for im in broken["images"] if im.get("detections"))
    animal["detections"][0]["category"] = "7"
    (tmp_path / "broken.json").write_text(json.dumps(broken), encoding="utf-8")
    result = vbr.validate_batch_results(str(tmp_path / "broken.json"))["validation_results"]
    assert any("unmapped category 7" in e for e in result["errors"])


def test_from_manifest_reads_the_bundle_contract() -> None:
    from edge.bundle import ClassifierSpec, FileEntry, InputSpec, Manifest, SegmenterSpec

    f = FileEntry(path="x.onnx", sha256="0" * 64, bytes=1)
    spec = InputSpec(size=(8, 8), mean=(0, 0, 0), std=(1, 1, 1))
    m = Manifest(
        format_version=1,
        created="2026-05-01T00:00:00+00:00",
        target="cpu",
        providers=["CPUExecutionProvider"],
        classifier=ClassifierSpec(
            file=f,
            name="lite0",
            input=spec,
            classes=["empty", "elk", "human", "Vehicle"],
            empty_classes=["empty"],
            human_classes=["human"],
            cam_layer="features",
            cam_size=(2, 2),
            precision="int8",
        ),
        segmenter=SegmenterSpec(
            file=f, name="seg", input=spec, output_size=(2, 2), precision="int8"
        ),
        thresholds={"tag": 0.8},
    )
    info = BundleInfo.from_manifest(m)
    assert info.name == "lite0" and info.version == m.created
    assert info.vehicle_classes == ("Vehicle",)
    assert [info.kind(c) for c in m.classifier.classes] == ["empty", "animal", "human", "vehicle"]
    assert info.thresholds == {"tag": 0.8}
