"""Answers applied to a real OUT made by the watcher: the journal rows, the files on disk, the
sidecars, a crash at each step of a move, and the exports that carry the person's label."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edge.camtrapdp import _observations
from edge.journal import AlreadyAnsweredError, AnswerRefusedError, Journal
from edge.overlay import ensure_overlay
from edge.reports import records
from edge.results import BundleInfo, image_entry
from edge.review.answers import answer_frames, finish_pending, outcome
from edge.review.queue import load_queue, words

from .review_helpers import ALL_REVIEW, CA01, files_under, frames_by_name, sidecar_of

ROOT = Path(__file__).resolve().parents[3]
BUNDLE = BundleInfo(
    name="tiny-cnn",
    classes=("empty", "deer", "fox", "human"),
    empty_classes=("empty",),
    human_classes=("human",),
)


def test_the_queue_is_grouped_per_camera_and_burst(out: Path):
    ids = frames_by_name(out)
    with Journal.open(out) as j:
        cameras = load_queue(j, out)
    assert [c.name for c in cameras] == ["CA01", "S90"]
    ca, s90 = cameras
    # S90: EXIF times, two bursts of three; CA01: file times an hour apart, one frame each
    assert [[i.id for i in b.items] for b in s90.bursts] == [
        [ids["EK000001.JPG"], ids["EK000002.JPG"], ids["EK000003.JPG"]],
        [ids["EK000004.JPG"], ids["EK000005.JPG"], ids["EK000006.JPG"]],
    ]
    assert [len(b.items) for b in ca.bursts] == [1, 1, 1]
    item = s90.bursts[0].items[1]
    assert item.overlay is None  # not drawn until someone looks (edge.overlay.ensure_overlay)
    with Journal.open(out) as j:
        frame = j.get(item.id)
        assert frame is not None and frame.has_overlay_data
        drawn = ensure_overlay(j, out, frame)
        assert drawn == out / "overlays/S90/EK000002.JPG.overmap.jpg" and drawn.is_file()
        assert [
            i.overlay
            for c in load_queue(j, out)
            for b in c.bursts
            for i in b.items
            if i.id == item.id
        ] == ["overlays/S90/EK000002.JPG.overmap.jpg"]
    assert item.top and item.top[0][0] == item.label
    assert item.words.startswith("The model is unsure")


def test_frames_moved_by_hand_or_linked_out_of_out_are_not_in_the_queue(out: Path, tmp_path):
    ids = frames_by_name(out)
    (out / "review/S90/EK000001.JPG").rename(tmp_path / "moved.jpg")
    target = out / "review/S90/EK000002.JPG"
    target.unlink()
    target.symlink_to(tmp_path / "moved.jpg")  # a link leading out of OUT
    with Journal.open(out) as j:
        waiting = {i.id for c in load_queue(j, out) for b in c.bursts for i in b.items}
        assert ids["EK000001.JPG"] not in waiting and ids["EK000002.JPG"] not in waiting
        assert len(waiting) == 7
        with pytest.raises(AnswerRefusedError):
            answer_frames(j, out, [ids["EK000002.JPG"]], "accept", who="ana")
        assert j.answers() == []
    assert target.is_symlink()  # untouched


def test_scores_in_plain_words():
    low = words("bobcat", 0.35, 0.1)
    assert low.startswith("The model is unsure") and "not the animal" in low
    assert (
        words("bobcat", 0.82, 0.75)
        == "The model is fairly sure it is a bobcat (82 %) and looked at the animal."
    )
    assert "but it looked at the grass" in words("elk", 0.95, 0.05)
    assert "an elk" in words("elk", 0.95, 0.05)
    assert words(None, None, None) == "The model gave no label for this frame."


def test_outcome_of_each_answer():
    assert outcome("accept", "fox") == ("fox", "tagged")
    assert outcome("accept", "empty", empty_classes=("empty",)) == ("empty", "empty")
    assert outcome("label", "fox", "  bobcat ") == ("bobcat", "tagged")
    assert outcome("empty", "fox") == (None, "empty")
    assert outcome("person", "fox") == ("human", "tagged")
    assert outcome("vehicle", "fox") == ("vehicle", "tagged")
    for bad in ("", " ", "x" * 65, "bob\x00cat"):
        with pytest.raises(ValueError):
            outcome("label", "fox", bad)
    with pytest.raises(ValueError):
        outcome("maybe", "fox")


def test_accept_moves_the_frame_once_and_records_who_and_what(out: Path):
    ids = frames_by_name(out)
    fid = ids["EK000002.JPG"]  # the model said fox
    src = out / "review/S90/EK000002.JPG"
    data = src.read_bytes()
    with Journal.open(out) as j:
        [applied] = answer_frames(j, out, [fid], "accept", who="ana")
        assert applied.dest == "tagged/S90/EK000002.JPG" and applied.label == "fox"
        a = j.answer_of(fid)
        assert (a.answer, a.label, a.decision, a.who, a.state) == (
            "accept",
            "fox",
            "tagged",
            "ana",
            "done",
        )
        assert (a.previous_decision, a.previous_label, a.src) == (
            "review",
            "fox",
            "review/S90/EK000002.JPG",
        )
        f = j.get(fid)
        assert (f.decision, f.dest, f.label) == ("tagged", "tagged/S90/EK000002.JPG", "fox")
        with pytest.raises(AlreadyAnsweredError):
            answer_frames(j, out, [fid], "empty", who="bo")
        assert j.answer_of(fid).decision == "tagged"
    dst = out / "tagged/S90/EK000002.JPG"
    assert not src.exists() and dst.read_bytes() == data and dst.stat().st_nlink == 1
    assert not src.with_name(src.name + ".json").exists()
    side = sidecar_of(dst)
    assert side["label"] == "fox" and side["classification_method"] == "human"
    assert side["answered_by"] == "ana" and side["machine_decision"] == "review"
    assert side["sha256"] == f.sha256
    assert files_under(out, "empty") == set()


def test_empty_label_and_a_whole_burst(out: Path):
    ids = frames_by_name(out)
    burst = [ids["EK000004.JPG"], ids["EK000005.JPG"], ids["EK000006.JPG"]]
    with Journal.open(out) as j:
        answer_frames(j, out, [ids["CA-01_0006501.jpg"]], "empty", who="ana")
        answer_frames(j, out, [ids["CA-01_0006502.jpg"]], "label", label="bobcat", who="ana")
        applied = answer_frames(j, out, burst, "person", who="bo")
        assert [a.dest for a in applied] == [f"tagged/S90/EK00000{k}.JPG" for k in (4, 5, 6)]
        assert len(j.review_queue()) == 9 - 5
    assert files_under(out, "empty") == {"empty/CA01/CA-01_0006501.jpg"}
    assert "tagged/CA01/CA-01_0006502.jpg" in files_under(out, "tagged")
    assert sidecar_of(out / "tagged/CA01/CA-01_0006502.jpg")["label"] == "bobcat"
    assert sidecar_of(out / "empty/CA01/CA-01_0006501.jpg")["decision"] == "empty"
    assert len(files_under(out, "review")) == 4


def test_a_burst_with_one_frame_not_in_the_queue_changes_nothing(out: Path):
    ids = frames_by_name(out)
    before = files_under(out, "review")
    with Journal.open(out) as j:
        answer_frames(j, out, [ids["EK000003.JPG"]], "empty", who="ana")
        for frames, error in (
            ([ids["EK000001.JPG"], ids["EK000003.JPG"]], AlreadyAnsweredError),
            ([ids["EK000001.JPG"], 999], AnswerRefusedError),
        ):
            with pytest.raises(error):
                answer_frames(j, out, frames, "accept", who="ana")
        assert [a.frame_id for a in j.answers()] == [ids["EK000003.JPG"]]
    assert files_under(out, "review") == before - {"review/S90/EK000003.JPG"}


def _crash_answer(out: Path, frame_id: int, step: str) -> None:
    """Answer in a child process that dies (os._exit, as a power cut) at `step`."""
    code = (
        "import sys; from pathlib import Path; from edge.journal import Journal;"
        "from edge.review.answers import answer_frames;"
        "out = Path(sys.argv[1]); j = Journal.open(out);"
        "answer_frames(j, out, [int(sys.argv[2])], 'accept', who='ana')"
    )
    env = {**os.environ, "EDGE_CRASH_AT": step}
    r = subprocess.run(
        [sys.executable, "-c", code, str(out), str(frame_id)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 77, r.stderr


@pytest.mark.parametrize("step", ["move_before_rename", "move_before_unlink"])
@pytest.mark.parametrize("then", ["finish_pending", "the next answer", "the next start"])
def test_a_crash_mid_answer_is_finished_later(out: Path, step: str, then: str):
    ids = frames_by_name(out)
    fid = ids["EK000005.JPG"]
    src, dst = out / "review/S90/EK000005.JPG", out / "tagged/S90/EK000005.JPG"
    _crash_answer(out, fid, step)
    with Journal.open(out) as j:
        assert j.answer_of(fid).state == "intent"  # journaled before the move
        assert src.exists() and dst.exists() == (step == "move_before_unlink")
        if then == "finish_pending":
            assert finish_pending(j, out) == 1
        elif then == "the next answer":
            answer_frames(j, out, [ids["EK000006.JPG"]], "empty", who="bo")
        else:
            from fastapi.testclient import TestClient

            from edge.review.app import Settings, create_app

            with TestClient(create_app(Settings(out=out))):  # the page's app starts, stops
                pass
        assert j.answer_of(fid).state == "done" and j.get(fid).dest == "tagged/S90/EK000005.JPG"
        assert finish_pending(j, out) == 0
        with pytest.raises(AlreadyAnsweredError):
            answer_frames(j, out, [fid], "empty", who="bo")
    assert not src.exists() and dst.is_file() and dst.stat().st_nlink == 1
    assert sidecar_of(dst)["label"] == "human"
    frames = [p for p in out.rglob("EK000005.JPG")]
    assert frames == [dst]  # exactly one place


def test_results_and_camtrap_dp_carry_the_human_label(out: Path):
    ids = frames_by_name(out)
    with Journal.open(out) as j:
        answer_frames(j, out, [ids["EK000002.JPG"]], "label", label="deer", who="ana")
        answer_frames(j, out, [ids["EK000003.JPG"]], "empty", who="ana")
        recs = {r.relpath: r for r in records(j)}
    deer, empty, machine = (
        recs["S90/EK000002.JPG"],
        recs["S90/EK000003.JPG"],
        recs["S90/EK000004.JPG"],
    )
    assert (deer.label, deer.decision, deer.classification_method, deer.machine_label) == (
        "deer",
        "tagged",
        "human",
        "fox",
    )
    assert deer.dest == "tagged/S90/EK000002.JPG" and deer.classified_by == "ana"
    assert machine.classification_method == "machine" and machine.decision == "review"

    entry = image_entry(deer, BUNDLE, paths="dest")
    assert entry["file"] == "tagged/S90/EK000002.JPG" and entry["label"] == "deer"
    assert entry["classification_method"] == "human" and entry["machine_label"] == "fox"
    assert entry["detections"][0]["classifications"] == [["1", 1.0]]
    assert image_entry(empty, BUNDLE)["detections"] == []
    assert "classification_method" not in image_entry(machine, BUNDLE)

    def obs(r):
        return _observations(
            r, "m", "d", "e", "t", BUNDLE, {"deer": "Odocoileus"}, "2026-01-01T00:00:00Z"
        )[0]

    o = obs(deer)
    assert (
        o["classificationMethod"],
        o["classifiedBy"],
        o["observationType"],
        o["scientificName"],
    ) == ("human", "ana", "animal", "Odocoileus")
    assert o["classificationTimestamp"].endswith("Z") and "'fox'" in o["observationComments"]
    assert (obs(empty)["classificationMethod"], obs(empty)["observationType"]) == ("human", "blank")
    assert (obs(machine)["classificationMethod"], obs(machine)["observationType"]) == (
        "machine",
        "unknown",
    )


def test_the_summary_counts_the_persons_label(out: Path):
    from rich.console import Console

    from edge.reports import summary

    ids = frames_by_name(out)
    with Journal.open(out) as j:
        answer_frames(
            j, out, [ids["EK000002.JPG"], ids["EK000004.JPG"]], "label", label="bobcat", who="ana"
        )
        console = Console(record=True, width=120)
        console.print(summary(j))
    text = console.export_text()
    assert "2 answered by a person" in text
    row = next(line for line in text.splitlines() if "bobcat" in line)
    assert re.findall(r"\d+", row) == ["2", "0"]  # two frames, neither waiting for review


def test_the_review_side_never_imports_torch(tmp_path: Path):
    code = (
        "import sys; import edge.review.app, edge.review.server, edge.cli;"
        "bad = [m for m in ('torch', 'torchvision') if m in sys.modules];"
        "sys.exit(repr(bad) if bad else 0)"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr + r.stdout


def test_a_camtrap_dp_package_of_an_answered_out_is_valid(out: Path, tmp_path: Path):
    """The whole way: the watcher's OUT, answers, then the package `edge export-dp` writes,
    checked against the standard's table schemas."""
    import csv

    from edge.camtrapdp import local_schema_descriptor, write_camtrap_dp
    from edge.config import parse_config

    frictionless = pytest.importorskip("frictionless")
    schemas = ROOT.parent / "shared" / "data" / "camtrap-dp"
    if not schemas.is_dir():
        pytest.skip(f"reference data missing: {schemas}")
    ids = frames_by_name(out)
    with Journal.open(out) as j:
        answer_frames(
            j, out, [ids["EK000001.JPG"], ids["EK000002.JPG"]], "label", label="deer", who="ana"
        )
        answer_frames(j, out, [ids["EK000004.JPG"]], "empty", who="bo")
        frames = records(j)
    cfg = parse_config(
        {
            "deployment": {
                "deployment_id": "s90",
                "latitude": -12.58,
                "longitude": -69.2,
                "timezone": "America/Lima",
            },
            "project": {
                "title": "review test",
                "contributors": [{"title": "Field Team", "role": "contact"}],
            },
            "taxa": {"deer": "Mazama americana"},
        }
    )
    folder = out / "camtrap-dp"
    write_camtrap_dp(folder, frames, cfg, bundle_info=BUNDLE, paths="dest")
    desc = local_schema_descriptor(folder, schemas)
    assert frictionless.Package(desc, basepath=str(folder)).validate().valid
    media = {
        m["mediaID"]: m["filePath"]
        for m in csv.DictReader(open(folder / "media.csv", encoding="utf-8"))
    }
    obs = {
        media[o["mediaID"]]: o
        for o in csv.DictReader(open(folder / "observations.csv", encoding="utf-8"))
    }
    deer = obs["tagged/S90/EK000001.JPG"]
    assert (deer["classificationMethod"], deer["classifiedBy"], deer["scientificName"]) == (
        "human",
        "ana",
        "Mazama americana",
    )
    assert obs["empty/S90/EK000004.JPG"]["observationType"] == "blank"
    assert obs["empty/S90/EK000004.JPG"]["classificationMethod"] == "human"
    assert obs["review/S90/EK000005.JPG"]["classificationMethod"] == "machine"
    assert all((out / path).is_file() for path in media.values())


def test_the_watchers_next_run_keeps_the_answers_and_writes_them_out(
    out: Path, tmp_path: Path, tiny_bundle: Path
):
    """Answers while a watcher holds OUT's journal, then the watcher's next run: the answered
    frames stay where the person sent them and its results file carries their labels."""
    import json
    import shutil

    from edge.bundle import load_bundle
    from edge.tui import Stats
    from edge.watch import WatchOptions, run_once

    ids = frames_by_name(out)
    with Journal.open(out, exclusive=True):  # the watcher's lock: readers and answers go on
        with Journal.open(out) as j:
            answer_frames(j, out, [ids["EK000002.JPG"]], "label", label="deer", who="ana")
    inbox = tmp_path / "inbox2"
    (inbox / "CA01").mkdir(parents=True)
    shutil.copy(sorted(CA01.iterdir())[5], inbox / "CA01" / "new.jpg")
    run_once(
        load_bundle(tiny_bundle),
        WatchOptions(inbox=inbox, out=out, thresholds=ALL_REVIEW, settle=0.1, give_up=2.0, batch=4),
        Stats(out=out),
    )
    assert (out / "tagged/S90/EK000002.JPG").is_file()
    assert "review/CA01/new.jpg" in files_under(out, "review")
    entries = {
        e["file"]: e for e in json.loads((out / "results/megadetector.json").read_text())["images"]
    }
    deer = entries["tagged/S90/EK000002.JPG"]
    assert deer["label"] == "deer" and deer["classification_method"] == "human"
    assert deer["decision"] == "tagged" and deer["classified_by"] == "ana"
    assert entries["review/CA01/new.jpg"]["decision"] == "review"
