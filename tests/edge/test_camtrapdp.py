"""The Camtrap DP package, validated offline against the TDWG files in /work/shared/data.

Two checks, both against local copies because the URLs in a package cannot be reached here:
- the tables with frictionless (types, formats, enums, ranges, unique and foreign keys), each
  table schema read from the local `*-table-schema.json`;
- datapackage.json with jsonschema against the local `camtrap-dp-profile.json`. The profile
  refers to two external schemas: GeoJSON resolves to the copy frictionless ships; the
  generic Data Package schema resolves to an empty schema, because frictionless' own package
  metadata check (the first check) covers that part.
A package broken on purpose must fail each check, so the checks are shown to bite.
"""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from edge.camtrapdp import CamtrapDPError, local_schema_descriptor, write_camtrap_dp
from edge.config import Config, parse_config
from edge.results import BundleInfo, FrameRecord

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"

DATA = SHARED
CAMTRAP = DATA / "camtrap"
SCHEMAS = DATA / "camtrap-dp"
pytestmark = pytest.mark.skipif(not SCHEMAS.is_dir(), reason="Camtrap DP schemas not present")

BUNDLE = BundleInfo(
    name="lite0-peru",
    version="2026-05-01T00:00:00+00:00",
    classes=("empty", "animal", "person", "jaguar"),
    empty_classes=("empty",),
    human_classes=("person",),
)
CONFIG = {
    "triage": {"burst_gap_seconds": 10},
    "deployment": {
        "deployment_id": "peru-s90",
        "latitude": -12.58,
        "longitude": -69.2,
        "coordinate_uncertainty": 50,
        "camera_model": "Reconyx-HC500",
        "camera_height": 0.6,
        "timezone": "America/Lima",
        "cameras": {"S90_SDZG2": {"latitude": -12.571, "longitude": -69.193}},
    },
    "project": {
        "title": "Peru S90 triage test",
        "contributors": [{"title": "Field Team", "role": "contact"}],
    },
}


def real_frames() -> list[FrameRecord]:
    """20 Peru S90 frames (two cameras, bursts, day and IR night) with their EXIF times and
    the data set's labels and boxes, plus one jaguar, one undecided and one unreadable frame."""
    from PIL import Image

    rows = list(csv.DictReader(open(CAMTRAP / "labels.csv", encoding="utf-8")))
    peru = [r for r in rows if r["source"] == "peru_s90_animl"]
    people = [r for r in peru if r["label"] == "person"]
    picked = peru[:14] + peru[60:63] + people
    frames = []
    for i, r in enumerate(picked):
        rel = r["file"].removeprefix("peru_s90_animl/")
        with Image.open(CAMTRAP / r["file"]) as im:
            stamp = im.getexif().get_ifd(0x8769).get(36867)
            size = im.size
        boxes = tuple(tuple(float(v) for v in b.split(",")) for b in r["bbox"].split(";") if b)
        conf = 0.55 + 0.4 * ((i * 7) % 10) / 10
        decision = "empty" if r["label"] == "empty" else ("tagged" if conf >= 0.7 else "review")
        frames.append(
            FrameRecord(
                relpath=rel,
                camera=rel.split("/")[0],
                sha256=f"{i:064x}",
                timestamp=datetime.strptime(stamp, "%Y:%m:%d %H:%M:%S"),
                width=size[0],
                height=size[1],
                label=r["label"],
                class_index=BUNDLE.classes.index(r["label"]),
                softmax=conf,
                overmap=conf - 0.1,
                confidence=conf,
                decision=decision,
                dest=f"{decision}/{rel}",
                boxes=boxes,
            )
        )
    jag = next(r for r in rows if r["source"] == "animl_jaguar" and r["datetime"])
    frames.append(
        FrameRecord(
            relpath="jaguar/" + Path(jag["file"]).name,
            camera="jaguar",
            sha256="f" * 64,
            timestamp=datetime.fromisoformat(jag["datetime"]),
            label="jaguar",
            class_index=3,
            confidence=0.91,
            decision="tagged",
            dest="tagged/jaguar/" + Path(jag["file"]).name,
        )
    )
    frames.append(replace(frames[0], relpath="S90_SDZG1/undecided.JPG", dest=None, decision=None))
    frames.append(FrameRecord(relpath="S90_SDZG1/bad.JPG", camera="S90_SDZG1", failure="truncated"))
    return frames


def validate_tables(folder: Path) -> Any:
    from frictionless import Package

    package = Package(local_schema_descriptor(folder, SCHEMAS), basepath=str(folder))
    return package.validate()


def validate_profile(folder: Path) -> list[str]:
    import frictionless
    import jsonschema
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT4

    geojson = json.loads(
        (Path(frictionless.__file__).parent / "assets/profiles/geojson.json").read_text()
    )
    registry = Registry().with_resources(
        [
            (
                "https://specs.frictionlessdata.io/schemas/data-package.json",
                DRAFT4.create_resource({}),
            ),
            ("http://json.schemastore.org/geojson.json", Resource.from_contents(geojson, DRAFT4)),
        ]
    )
    profile = json.loads((SCHEMAS / "camtrap-dp-profile.json").read_text())
    validator = jsonschema.Draft4Validator(
        profile, registry=registry, format_checker=jsonschema.FormatChecker()
    )
    desc = json.loads((folder / "datapackage.json").read_text())
    return [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(desc)]


def table(folder: Path, name: str) -> list[dict[str, str]]:
    return list(csv.DictReader(open(folder / f"{name}.csv", encoding="utf-8")))


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    folder = tmp_path_factory.mktemp("dp")
    report = write_camtrap_dp(folder, real_frames(), parse_config(CONFIG), bundle_info=BUNDLE)
    return folder, report


def test_real_frames_make_a_valid_package(package: tuple[Path, Any]) -> None:
    folder, report = package
    result = validate_tables(folder)
    assert result.valid, result.flatten(["type", "note", "fieldName", "rowNumber"])
    assert validate_profile(folder) == []
    assert (report.deployments, report.media) == (3, 22)
    assert report.skipped == {"S90_SDZG1/bad.JPG": "unreadable: truncated"}


def test_the_tables_say_what_the_watcher_decided(package: tuple[Path, Any]) -> None:
    folder, _ = package
    deps = {d["deploymentID"]: d for d in table(folder, "deployments")}
    assert set(deps) == {"peru-s90-S90_SDZG1", "peru-s90-S90_SDZG2", "peru-s90-jaguar"}
    assert deps["peru-s90-S90_SDZG2"]["latitude"] == "-12.571"  # the camera's own
    assert deps["peru-s90-S90_SDZG1"]["latitude"] == "-12.58"  # the shared one
    media = {m["filePath"]: m for m in table(folder, "media")}
    ek1 = next(m for p, m in media.items() if p.endswith("S90_SDZG1/EK000001.JPG"))
    assert ek1["timestamp"] == "2014-07-01T15:22:09-05:00"  # EXIF time on Lima's clock
    assert deps["peru-s90-S90_SDZG1"]["deploymentStart"] <= ek1["timestamp"]
    obs = table(folder, "observations")
    types = {o["observationType"] for o in obs}
    assert {"animal", "human", "blank", "unknown", "unclassified"} <= types
    humans = [o for o in obs if o["observationType"] == "human"]
    assert all(o["scientificName"] == "Homo sapiens" for o in humans)
    jaguar = next(o for o in obs if o["deploymentID"] == "peru-s90-jaguar")
    assert jaguar["scientificName"] == "Panthera onca"
    assert jaguar["classificationProbability"] == "0.91"
    assert (
        jaguar["classifiedBy"].startswith("overmap-edge ")
        and "lite0-peru" in jaguar["classifiedBy"]
    )
    boxed = [o for o in obs if o["bboxX"]]
    assert boxed and all(o["count"] == "1" for o in boxed)
    # frames of a burst share an event; different cameras never do
    events = {o["eventID"] for o in obs if o["deploymentID"] == "peru-s90-S90_SDZG1"}
    assert (
        1
        < len(events)
        < len({o["mediaID"] for o in obs if o["deploymentID"] == "peru-s90-S90_SDZG1"})
    )
    desc = json.loads((folder / "datapackage.json").read_text())
    assert {t["scientificName"] for t in desc["taxonomic"]} == {"Homo sapiens", "Panthera onca"}
    assert desc["temporal"]["start"] <= desc["temporal"]["end"]


def test_a_broken_package_fails_both_checks(package: tuple[Path, Any], tmp_path: Path) -> None:
    folder, _ = package
    for f in folder.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    media = (tmp_path / "media.csv").read_text().splitlines()
    media[1] = media[1].replace("-05:00", "", 1).replace("T", " ", 1)  # timestamp without zone
    (tmp_path / "media.csv").write_text("\n".join(media) + "\n")
    obs = (tmp_path / "observations.csv").read_text().replace(",blank,", ",nothing,", 1)
    (tmp_path / "observations.csv").write_text(obs)
    result = validate_tables(tmp_path)
    assert not result.valid
    kinds = {e[0] for e in result.flatten(["fieldName"])}
    assert {"timestamp", "observationType"} <= kinds
    desc = json.loads((tmp_path / "datapackage.json").read_text())
    desc["spatial"] = {"type": "Polygon", "coordinates": "nowhere"}
    desc["contributors"][0]["role"] = "boss"
    (tmp_path / "datapackage.json").write_text(json.dumps(desc))
    errors = validate_profile(tmp_path)
    assert any("spatial" in e for e in errors) and any("contributors" in e for e in errors)


def test_a_frame_from_another_deployment_breaks_the_foreign_key(
    package: tuple[Path, Any], tmp_path: Path
) -> None:
    folder, _ = package
    for f in folder.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    text = (tmp_path / "media.csv").read_text().replace("peru-s90-jaguar", "elsewhere")
    (tmp_path / "media.csv").write_text(text)
    result = validate_tables(tmp_path)
    assert [e[0] for e in result.flatten(["type"])] == ["foreign-key"]


def test_missing_coordinates_or_contributors_are_named(tmp_path: Path) -> None:
    frames = real_frames()[:3]
    with pytest.raises(CamtrapDPError, match="latitude and longitude"):
        write_camtrap_dp(tmp_path, frames, Config(), bundle_info=BUNDLE)
    no_people = {**CONFIG, "project": {"title": "x"}}
    with pytest.raises(CamtrapDPError, match="contributor"):
        write_camtrap_dp(tmp_path, frames, parse_config(no_people), bundle_info=BUNDLE)
    with pytest.raises(CamtrapDPError, match="climb out"):
        write_camtrap_dp(
            tmp_path,
            [replace(frames[0], dest="../elsewhere/a.jpg")],
            parse_config(CONFIG),
            bundle_info=BUNDLE,
        )
