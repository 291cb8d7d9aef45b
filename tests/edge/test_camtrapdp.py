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
import os
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from edge.camtrapdp import CamtrapDPError, local_schema_descriptor, write_camtrap_dp
from edge.config import Config, ConfigError, parse_config
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
    assert report.warnings == ()  # no config dates: each deployment spans its frames
    assert_coherent(folder)


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


def test_events_are_the_watchers_bursts_at_most_burst_max_frames_long(tmp_path: Path) -> None:
    """25 frames of one camera a second apart (file times of a bulk copy, say): three events
    of 10, 10 and 5 frames, as the watcher's triage groups them, not one of 25."""
    first = real_frames()[0]
    frames = [
        replace(
            first,
            relpath=f"S90_SDZG1/f{i:02d}.JPG",
            sha256=f"{i:064x}",
            dest=f"{first.decision}/S90_SDZG1/f{i:02d}.JPG",
            timestamp=first.timestamp + timedelta(seconds=i),
        )
        for i in range(25)
    ]
    config = {**CONFIG, "triage": {"burst_gap_seconds": 10, "burst_max_frames": 10}}
    write_camtrap_dp(tmp_path, frames, parse_config(config), bundle_info=BUNDLE)
    event_of = {o["mediaID"]: o["eventID"] for o in table(tmp_path, "observations")}
    sizes = Counter(
        event_of[m["mediaID"]]
        for m in sorted(table(tmp_path, "media"), key=lambda m: m["timestamp"])
    )
    assert sorted(sizes.values(), reverse=True) == [10, 10, 5]


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


# Deployment dates. A watch run over real frames, exported with config dates that miss them:
# Peru S90 frames carry EXIF times of July 2014, the config (like examples/edge.toml) says the
# deployment started on 2026-05-01. Frames re-saved without EXIF carry their file's time.

PERU = CAMTRAP / "peru_s90_animl"
DATED = {
    "triage": {"burst_gap_seconds": 10},
    "deployment": {
        "deployment_id": "peru-s90",
        "latitude": -12.58,
        "longitude": -69.2,
        "timezone": "America/Lima",
        "deployment_start": "2026-05-01",  # as in examples/edge.toml; no end
        "cameras": {  # this camera's dates do hold its frames
            "S90_SDZG2": {"deployment_start": "2014-07-01", "deployment_end": "2014-07-31"}
        },
    },
    "project": {
        "title": "Peru S90 dates test",
        "contributors": [{"title": "Field Team", "role": "contact"}],
    },
}
FILE_TIMES = {  # frames without EXIF: their modification time, as a copy would leave it
    "S90_SDZG1/no-exif.JPG": datetime(2026, 5, 2, 10, 0, 0, 500000),
    "NOEXIF/a.JPG": datetime(2026, 5, 3, 8, 0, 0, 250000),
    "NOEXIF/b.JPG": datetime(2026, 5, 4, 9, 30, 0, 750000),
}


def lima(t: datetime) -> datetime:
    from zoneinfo import ZoneInfo

    return t.replace(tzinfo=ZoneInfo("America/Lima"), microsecond=0)


def fill_inbox(inbox: Path) -> dict[str, datetime]:
    """Four SDZG1 and three SDZG2 frames as the camera wrote them, three frames stripped of
    EXIF with set file times; returns relpath -> EXIF time for the frames that have one."""
    from PIL import Image

    from edge.exif import exif_time

    times = {}
    for cam, n in (("S90_SDZG1", 4), ("S90_SDZG2", 3)):
        (inbox / cam).mkdir(parents=True)
        for src in sorted((PERU / cam).iterdir())[:n]:
            (inbox / cam / src.name).write_bytes(src.read_bytes())
            t = exif_time(src)
            assert t is not None
            times[f"{cam}/{src.name}"] = t
    (inbox / "NOEXIF").mkdir()
    for k, (rel, t) in enumerate(FILE_TIMES.items()):
        with Image.open(PERU / "S90_SDZG1" / f"EK00000{5 + k}.JPG") as im:
            im.save(inbox / rel, "JPEG", quality=90)  # no exif= : the EXIF block is dropped
        stamp = t.timestamp()
        os.utime(inbox / rel, (stamp, stamp))
        assert exif_time(inbox / rel) is None
    return times


@pytest.fixture(scope="module")
def watched(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A real `run_once` over the inbox with the tiny bundle, and the package of its journal."""
    from edge.bundle import load_bundle
    from edge.journal import Journal
    from edge.reports import records
    from edge.tui import Stats
    from edge.watch import WatchOptions, run_once

    root = tmp_path_factory.mktemp("dated")
    inbox, out = root / "in", root / "out"
    exif = fill_inbox(inbox)
    thresholds = {"tag": 0.6, "empty": 0.8, "empty_foreground": 0.02}
    opts = WatchOptions(
        inbox=inbox, out=out, thresholds=thresholds, settle=0.1, give_up=2.0, batch=4, copy=True
    )
    bundle = load_bundle(tiny_bundle)
    run_once(bundle, opts, Stats(out=out))
    with Journal.open(out) as j:
        frames = records(j)
    assert len(frames) == len(exif) + len(FILE_TIMES)
    folder = out / "camtrap-dp"
    info = BundleInfo.from_manifest(bundle.manifest)
    report = write_camtrap_dp(folder, frames, parse_config(DATED), bundle_info=info)
    return {"out": out, "folder": folder, "report": report, "exif": exif, "frames": frames}


def assert_coherent(folder: Path) -> dict[str, tuple[datetime, datetime]]:
    """Each deployment starts before it ends and holds its media and their events."""
    spans = {}
    for d in table(folder, "deployments"):
        start = datetime.fromisoformat(d["deploymentStart"])
        end = datetime.fromisoformat(d["deploymentEnd"])
        assert start <= end, d
        spans[d["deploymentID"]] = (start, end)
    for m in table(folder, "media"):
        start, end = spans[m["deploymentID"]]
        assert start <= datetime.fromisoformat(m["timestamp"]) <= end, (m, start, end)
    for o in table(folder, "observations"):
        start, end = spans[o["deploymentID"]]
        assert start <= datetime.fromisoformat(o["eventStart"]) <= end, o
        assert start <= datetime.fromisoformat(o["eventEnd"]) <= end, o
    desc = json.loads((folder / "datapackage.json").read_text())
    assert desc["temporal"]["start"] == min(s for s, _ in spans.values()).date().isoformat()
    return spans


def test_the_journal_of_a_watch_run_makes_a_coherent_package(watched: dict[str, Any]) -> None:
    folder, report, exif = watched["folder"], watched["report"], watched["exif"]
    spans = assert_coherent(folder)
    result = validate_tables(folder)
    assert result.valid, result.flatten(["type", "note", "fieldName", "rowNumber"])
    assert validate_profile(folder) == []

    # SDZG1: the config's start misses every EXIF time; the deployment is widened to them
    sdzg1 = sorted(lima(t) for rel, t in exif.items() if rel.startswith("S90_SDZG1/"))
    assert spans["peru-s90-S90_SDZG1"] == (sdzg1[0], sdzg1[-1])
    # SDZG2: its own dates hold its frames and are kept as configured
    assert spans["peru-s90-S90_SDZG2"] == (
        lima(datetime(2014, 7, 1)),
        lima(datetime(2014, 7, 31, 23, 59, 59)),
    )
    # NOEXIF: the configured start, the end from the only times there are (file times)
    assert spans["peru-s90-NOEXIF"] == (
        lima(datetime(2026, 5, 1)),
        lima(FILE_TIMES["NOEXIF/b.JPG"]),
    )
    media = table(folder, "media")
    per_dep = {d: sum(m["deploymentID"] == d for m in media) for d in spans}
    assert per_dep == {"peru-s90-S90_SDZG1": 4, "peru-s90-S90_SDZG2": 3, "peru-s90-NOEXIF": 2}
    # the SDZG1 frame without EXIF would have pushed the end to 2026: left out, and said why
    assert set(report.skipped) == {"S90_SDZG1/no-exif.JPG"}
    assert "no EXIF time" in report.skipped["S90_SDZG1/no-exif.JPG"]
    assert "peru-s90-S90_SDZG1" in report.skipped["S90_SDZG1/no-exif.JPG"]
    deps = {d["deploymentID"]: d for d in table(folder, "deployments")}
    assert "widened" in deps["peru-s90-S90_SDZG1"]["deploymentComments"]
    assert deps["peru-s90-S90_SDZG2"]["deploymentComments"] == ""


def test_the_warnings_name_the_deployment_the_count_and_the_range(
    watched: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    warnings, exif = watched["report"].warnings, watched["exif"]
    by_dep: dict[str, list[str]] = {}
    for w in warnings:
        by_dep.setdefault(w.split(":", 1)[0], []).append(w)
    assert set(by_dep) == {"deployment peru-s90-S90_SDZG1", "deployment peru-s90-NOEXIF"}
    widened, left_out = by_dep["deployment peru-s90-S90_SDZG1"]
    sdzg1 = sorted(lima(t) for rel, t in exif.items() if rel.startswith("S90_SDZG1/"))
    assert f"{len(sdzg1)} of {len(sdzg1) + 1} media were taken" in widened
    assert f"{sdzg1[0].isoformat()} .. {sdzg1[-1].isoformat()}" in widened
    assert "2026-05-01T00:00:00-05:00 .. unset" in widened  # what the config said
    assert f"1 of {len(sdzg1) + 1} media have no EXIF time" in left_out
    assert lima(FILE_TIMES["S90_SDZG1/no-exif.JPG"]).isoformat() in left_out
    (no_exif,) = by_dep["deployment peru-s90-NOEXIF"]
    assert "none of its 2 media has an EXIF time, so its deploymentEnd comes" in no_exif
    # also logged, so a caller that only reads logs hears it
    folder = watched["out"] / "again"
    with caplog.at_level("WARNING", logger="edge.camtrapdp"):
        again = write_camtrap_dp(folder, watched["frames"], parse_config(DATED), bundle_info=BUNDLE)
    assert again.warnings == warnings
    assert [r.getMessage() for r in caplog.records] == [f"Camtrap DP: {w}" for w in warnings]


def test_export_dp_on_the_command_line_reports_the_disagreement(
    watched: dict[str, Any], tiny_bundle: Path, tmp_path: Path
) -> None:
    """`edge export-dp` in its own process, as a ranger runs it: the warnings reach stderr."""
    cfg = tmp_path / "edge.toml"
    cfg.write_text(
        '[deployment]\ndeployment_id = "peru-s90"\nlatitude = -12.58\nlongitude = -69.2\n'
        'timezone = "America/Lima"\ndeployment_start = "2026-05-01"\n'
        '[deployment.cameras.S90_SDZG2]\ndeployment_start = "2014-07-01"\n'
        'deployment_end = "2014-07-31"\n'
        '[[project.contributors]]\ntitle = "Field Team"\nrole = "contact"\n'
    )
    folder = tmp_path / "dp"
    cmd = [
        sys.executable,
        "-m",
        "edge.cli",
        "export-dp",
        str(watched["out"]),
        "--config",
        str(cfg),
        "--bundle",
        str(tiny_bundle),
        "--folder",
        str(folder),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    out, err = " ".join(done.stdout.split()), " ".join(done.stderr.split())
    assert "(3 deployments, 9 media" in out and "1 skipped" in out
    assert "deployment peru-s90-S90_SDZG1: 4 of 5 media were taken" in err
    assert "deployment peru-s90-S90_SDZG1: 1 of 5 media have no EXIF time" in err
    assert "deployment peru-s90-NOEXIF: none of its 2 media has an EXIF time" in err
    assert "S90_SDZG2" not in err
    assert_coherent(folder)
    assert validate_tables(folder).valid


def test_dates_out_of_order_are_refused_with_the_key_to_fix(tmp_path: Path) -> None:
    frames = real_frames()[:3]
    same_day = {
        **CONFIG,
        "deployment": {
            **CONFIG["deployment"],
            "deployment_start": "2014-07-01T18:00:00-05:00",
            "deployment_end": "2014-07-01T08:00:00-05:00",
        },
    }
    with pytest.raises(CamtrapDPError, match="deployment peru-s90-S90_SDZG1: deployment_end"):
        write_camtrap_dp(tmp_path, frames, parse_config(same_day), bundle_info=BUNDLE)
    crossed = {
        **CONFIG,
        "deployment": {
            **CONFIG["deployment"],
            "deployment_end": "2014-06-30",
            "cameras": {"S90_SDZG1": {"deployment_start": "2014-07-01"}},
        },
    }
    with pytest.raises(ConfigError, match=r"cameras.S90_SDZG1: its deployment_end is before"):
        parse_config(crossed)  # refused when the config is read, before any export
    # file times only, all before the one configured date: no end can be found
    files_only = [
        replace(f, timestamp=datetime(2014, 7, 1, 12, 0, k, 5)) for k, f in enumerate(frames)
    ]
    late = {**CONFIG, "deployment": {**CONFIG["deployment"], "deployment_start": "2026-05-01"}}
    with pytest.raises(CamtrapDPError, match="set both deployment_start and deployment_end"):
        write_camtrap_dp(tmp_path, files_only, parse_config(late), bundle_info=BUNDLE)
    assert not (tmp_path / "deployments.csv").exists()  # nothing half written


# Events are the watcher's bursts. `edge watch` and `edge export-dp` run with one config: a gap
# of 10 s and bursts of at most 2 frames. SDZG1's real bursts of 3 EXIF frames (two of them in
# one second) are cut by the cap; frames without EXIF carry file times a fraction of a second
# apart, one gap just over 10 s (10.4 s: 10 s once the media timestamps drop the fractions).

BURSTS_TOML = """
[triage]
burst_gap_seconds = 10
burst_max_frames = 2
[deployment]
deployment_id = "bursts"
latitude = -12.58
longitude = -69.2
timezone = "America/Lima"
[[project.contributors]]
title = "Field Team"
role = "contact"
"""
T0 = datetime(2026, 5, 2, 10, 0, 0, 500000)
COPIED = {  # relpath -> file time
    "COPIED/a.JPG": T0,
    "COPIED/b.JPG": T0 + timedelta(seconds=10.4),  # the gap splits: 10.4 s > 10 s
    "COPIED/c.JPG": T0 + timedelta(seconds=11.5),
    "COPIED/d.JPG": T0 + timedelta(seconds=12.5),  # 1 s after c, but b and c make 2 frames
    "COPIED/e.JPG": T0 + timedelta(seconds=80),
}
EXPECTED_BURSTS = {
    frozenset({"S90_SDZG1/EK000001.JPG", "S90_SDZG1/EK000002.JPG"}),
    frozenset({"S90_SDZG1/EK000003.JPG"}),  # 15:22:10 as EK000002, cut by the cap
    frozenset({"S90_SDZG1/EK000004.JPG", "S90_SDZG1/EK000005.JPG"}),
    frozenset({"S90_SDZG1/EK000006.JPG"}),
    frozenset({"COPIED/a.JPG"}),
    frozenset({"COPIED/b.JPG", "COPIED/c.JPG"}),
    frozenset({"COPIED/d.JPG"}),
    frozenset({"COPIED/e.JPG"}),
}


def test_exported_events_are_the_bursts_the_watcher_decided_on(
    tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real watcher (`edge watch --once`) and `edge export-dp` with one config: each
    eventID holds exactly the frames one burst of the watcher's triage held."""
    from PIL import Image
    from typer.testing import CliRunner

    import edge.triage
    from edge.cli import app
    from edge.journal import Journal
    from edge.reports import records

    inbox, out, folder = tmp_path / "in", tmp_path / "out", tmp_path / "dp"
    (inbox / "S90_SDZG1").mkdir(parents=True)
    for k in range(1, 7):
        name = f"EK00000{k}.JPG"
        (inbox / "S90_SDZG1" / name).write_bytes((PERU / "S90_SDZG1" / name).read_bytes())
    (inbox / "COPIED").mkdir()
    sources = sorted((PERU / "S90_SDZG2").iterdir())
    for src, (rel, t) in zip(sources, COPIED.items(), strict=False):
        with Image.open(src) as im:
            im.save(inbox / rel, "JPEG", quality=90)  # without its EXIF: the file time counts
        os.utime(inbox / rel, (t.timestamp(), t.timestamp()))
    cfg = tmp_path / "edge.toml"
    cfg.write_text(BURSTS_TOML)

    # what the watcher's triage grouped: the frames of each call of edge.triage.bursts (the
    # burst rule decide_all applies) and the burst ids it gave them, by (camera, time, score)
    calls: list[tuple[list[tuple[Any, ...]], list[int], float, int]] = []
    real_bursts = edge.triage.bursts

    def bursts(every: Any, gap: float, max_frames: int) -> list[int]:
        ids = real_bursts(every, gap, max_frames)
        calls.append(([(e.camera, e.time, e.softmax) for e in every], ids, gap, max_frames))
        return ids

    monkeypatch.setattr(edge.triage, "bursts", bursts)
    runner = CliRunner()
    watched = runner.invoke(
        app,
        [
            "watch",
            str(inbox),
            "--out",
            str(out),
            "--config",
            str(cfg),
            "--bundle",
            str(tiny_bundle),
            "--once",
            "--no-tui",
            "--copy",
            "--batch",
            "64",
            "--settle",
            "0.1",
        ],
    )
    assert watched.exit_code == 0, watched.output
    assert calls and {(gap, cap) for *_, gap, cap in calls} == {(10.0, 2)}  # the config's
    with Journal.open(out) as j:
        frames = records(j)
    rel_of = {(fr.camera, fr.timestamp, fr.softmax): fr.relpath for fr in frames}
    assert len(rel_of) == len(frames) == sum(map(len, EXPECTED_BURSTS))  # told apart
    group: dict[str, str] = {}  # relpath -> a representative of its burst (union over calls)

    def root(r: str) -> str:
        while group.setdefault(r, r) != r:
            r = group[r]
        return r

    for keys, ids, *_ in calls:
        first: dict[int, str] = {}
        for key, b in zip(keys, ids, strict=True):
            rel = rel_of[key]
            group[root(rel)] = root(first.setdefault(b, rel))
    watcher = {frozenset(r for r in group if root(r) == root(x)) for x in group}
    assert watcher == EXPECTED_BURSTS  # the cap and the gap did cut, as meant

    exported = runner.invoke(
        app,
        [
            "export-dp",
            str(out),
            "--config",
            str(cfg),
            "--bundle",
            str(tiny_bundle),
            "--folder",
            str(folder),
        ],
    )
    assert exported.exit_code == 0, exported.output
    rel_at = {fr.dest: fr.relpath for fr in frames}
    path_of = {m["mediaID"]: m["filePath"] for m in table(folder, "media")}
    events: dict[str, set[str]] = {}
    cameras: dict[str, set[str]] = {}
    for o in table(folder, "observations"):
        events.setdefault(o["eventID"], set()).add(rel_at[path_of[o["mediaID"]]])
        cameras.setdefault(o["eventID"], set()).add(o["deploymentID"])
    assert {frozenset(v) for v in events.values()} == watcher
    assert all(len(c) == 1 for c in cameras.values())  # an event never spans two cameras
    assert validate_tables(folder).valid
