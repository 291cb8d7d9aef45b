"""People and vehicles are not animals: one rule (edge.kinds) for the results file and Camtrap DP.

The default bundle's classifier speaks ImageNet, whose vehicle and people classes have names
like "jeep" or "scuba_diver"; frames the data set labels vehicle or human are given such
labels here and must come out as vehicle / person in both files.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from edge.camtrapdp import write_camtrap_dp
from edge.config import parse_config
from edge.exif import when_taken
from edge.kinds import HUMAN_NAMES, VEHICLE_NAMES, kind_of, normalise
from edge.results import BundleInfo, FrameRecord, md_results

ROOT = Path(__file__).resolve().parents[2]
IMAGENET = [
    n.strip()
    for n in (ROOT / "export/assets/imagenet_classes.txt").read_text().splitlines()
    if n.strip()
]
CAMTRAP = ROOT.parent / "shared" / "data" / "camtrap"
SCHEMAS = ROOT.parent / "shared" / "data" / "camtrap-dp"
VEHICLES = ["jeep", "garbage_truck", "pickup", "minivan", "tractor", "motor_scooter"]
PEOPLE = ["scuba_diver", "groom", "ballplayer"]


def imagenet_bundle() -> BundleInfo:
    """As the default bundle's manifest has it: ImageNet classes, no empty or human ones."""
    return BundleInfo(name="efficientnet_lite0", classes=tuple(IMAGENET), thresholds={"tag": 0.6})


def labelled_frames() -> list[FrameRecord]:
    """Real frames the data set labels vehicle, human and elk, with ImageNet labels."""
    rows = list(csv.DictReader(open(CAMTRAP / "labels.csv", encoding="utf-8")))
    if not rows:
        pytest.skip("reference data missing")
    picks = (
        [
            (r, VEHICLES[i % len(VEHICLES)])
            for i, r in enumerate([r for r in rows if r["label"] == "vehicle"][: len(VEHICLES)])
        ]
        + [
            (r, PEOPLE[i % len(PEOPLE)])
            for i, r in enumerate([r for r in rows if r["label"] == "human"][: len(PEOPLE)])
        ]
        + [(r, "hartebeest") for r in [r for r in rows if r["label"] == "elk"][:2]]
    )
    frames = []
    for i, (r, label) in enumerate(picks):
        camera = r["file"].split("/")[1]
        rel = f"{camera}/{Path(r['file']).name}"
        when, source = when_taken(CAMTRAP / r["file"])
        frames.append(FrameRecord(
            relpath=rel, camera=camera, sha256=f"{i:064x}", timestamp=when,
            time_source=source, label=label, class_index=IMAGENET.index(label),
            softmax=0.9, overmap=0.8, confidence=0.85, decision="tagged",
            dest=f"tagged/{rel}",
        ))  # fmt: skip
    return frames


def test_the_named_imagenet_classes_exist_and_no_imagenet_animal_is_a_vehicle_or_person():
    names = {normalise(n) for n in IMAGENET}
    listed = [
        n for n in (*VEHICLE_NAMES, *HUMAN_NAMES) if "_" in n or "-" in n or n[0].isupper()
    ]  # the ImageNet spellings (generic words are single words)
    assert listed and all(normalise(n) in names for n in listed), [
        n for n in listed if normalise(n) not in names
    ]
    kinds = [kind_of(n) for n in IMAGENET]
    assert all(k == "animal" for k in kinds[:398])  # ImageNet's first 398 classes are animals
    vehicles = {n for n, k in zip(IMAGENET, kinds, strict=True) if k == "vehicle"}
    assert set(VEHICLES) <= vehicles and len(vehicles) >= 40
    assert {n for n, k in zip(IMAGENET, kinds, strict=True) if k == "human"} == set(PEOPLE)
    # spelling does not matter; a bundle's own classes win
    assert kind_of("Garbage Truck") == kind_of("go kart") == "vehicle"
    assert kind_of("Person") == kind_of("human") == "human"
    assert kind_of("jeep", human=("jeep",)) == "human"
    assert kind_of("empty", empty=("empty",)) == "empty" and kind_of("empty") == "animal"


def test_vehicles_and_people_are_named_so_in_the_results_file():
    frames = labelled_frames()
    d = md_results(frames, bundle=imagenet_bundle())
    cats = d["detection_categories"]
    got = {im["label"]: cats[im["detections"][0]["category"]] for im in d["images"]}
    assert {got[v] for v in VEHICLES} == {"vehicle"}
    assert {got[p] for p in PEOPLE} == {"person"}
    assert got["hartebeest"] == "animal"


@pytest.mark.skipif(not SCHEMAS.is_dir(), reason="Camtrap DP schemas not present")
def test_vehicles_and_people_are_named_so_in_camtrap_dp(tmp_path: Path):
    frames = labelled_frames()
    cfg = parse_config({
        "deployment": {"deployment_id": "d", "latitude": 1.0, "longitude": 2.0,
                       "timezone": "+00:00"},
        "project": {"title": "kinds", "contributors": [{"title": "T", "role": "contact"}]},
    })  # fmt: skip
    write_camtrap_dp(tmp_path, frames, cfg, bundle_info=imagenet_bundle(), paths="dest")
    media = {m["mediaID"]: m["filePath"] for m in csv.DictReader(open(tmp_path / "media.csv"))}
    by_label = {f.dest: f.label for f in frames}
    obs = list(csv.DictReader(open(tmp_path / "observations.csv", encoding="utf-8")))
    kinds = {by_label[media[o["mediaID"]]]: o for o in obs}
    assert {kinds[v]["observationType"] for v in VEHICLES} == {"vehicle"}
    assert {kinds[p]["observationType"] for p in PEOPLE} == {"human"}
    assert {kinds[p]["scientificName"] for p in PEOPLE} == {"Homo sapiens"}
    assert kinds["hartebeest"]["observationType"] == "animal"
    assert not kinds[VEHICLES[0]]["scientificName"]
