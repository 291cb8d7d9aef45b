"""Masks from boxes, MegaDetector output and trimap files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from edge.masks import boxes_from_labels_bbox, mask_from_boxes, mask_from_file, read_megadetector
from edge.overmap import energy

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"

DATA = SHARED


def test_box_orientation_non_square() -> None:
    # x = 0.5..1.0 (right half), y = 0..0.25 (top quarter) on a 40 x 80 frame
    m = mask_from_boxes([[0.5, 0.0, 0.5, 0.25]], (40, 80))
    assert m.shape == (40, 80) and m.dtype == np.float32
    assert m.sum() == 10 * 40
    assert m[:10, 40:].all() and not m[10:].any() and not m[:, :40].any()


def test_boxes_union_clip_and_empty() -> None:
    m = mask_from_boxes([[0, 0, 0.5, 0.5], [0.25, 0.25, 0.5, 0.5]], (8, 8))
    assert m.sum() == 16 + 16 - 4 and m.max() == 1.0
    clipped = mask_from_boxes([[0.75, 0.75, 0.5, 0.5]], (8, 8))
    assert clipped.sum() == 4 and clipped[6:, 6:].all()
    assert mask_from_boxes([], (5, 7)).sum() == 0
    with pytest.raises(ValueError, match="normalised"):
        mask_from_boxes([[10, 20, 30, 40]], (8, 8))
    with pytest.raises(ValueError, match="4 numbers"):
        mask_from_boxes([[0.1, 0.2, 0.3]], (8, 8))


def test_touch_takes_every_pixel_a_box_overlaps() -> None:
    # x 0.33..0.42 on 8 columns spans pixels 2 and 3 (2.64..3.36) but neither centre (2.5,
    # 3.5); y 0.05..0.10 on 4 rows spans part of row 0 (0.2..0.4), not its centre 0.5
    thin = [[0.33, 0.05, 0.09, 0.05]]
    assert mask_from_boxes(thin, (4, 8)).sum() == 0  # centres only: the box vanishes
    m = mask_from_boxes(thin, (4, 8), touch=True)
    assert m.sum() == 2 and m[0, 2] == 1 and m[0, 3] == 1
    # a box on pixel edges is the same either way; past the frame it is clipped
    edges = [[0.25, 0.5, 0.5, 0.5]]
    np.testing.assert_array_equal(
        mask_from_boxes(edges, (8, 8), touch=True), mask_from_boxes(edges, (8, 8))
    )
    assert mask_from_boxes([[0.9, 0.9, 0.5, 0.5]], (10, 10), touch=True).sum() == 1


def test_soft_boxes_peak_in_the_centre_and_stay_inside() -> None:
    m = mask_from_boxes([[0.25, 0.5, 0.5, 0.5]], (40, 40), soft=True)
    y, x = np.unravel_index(m.argmax(), m.shape)
    assert 28 <= y <= 31 and 18 <= x <= 21
    assert m.max() == pytest.approx(1.0, abs=0.05)
    assert not m[:20].any() and not m[:, :10].any() and not m[:, 30:].any()
    hard = mask_from_boxes([[0.25, 0.5, 0.5, 0.5]], (40, 40))
    assert (m <= hard).all() and m.sum() < 0.7 * hard.sum()


def test_labels_bbox_parsing() -> None:
    assert boxes_from_labels_bbox("") == []
    assert boxes_from_labels_bbox(None) == []
    b = boxes_from_labels_bbox("0.4615,0.4954,0.0461,0.0511;0.1,0.2,0.3,0.4")
    assert b == [[0.4615, 0.4954, 0.0461, 0.0511], [0.1, 0.2, 0.3, 0.4]]
    with pytest.raises(ValueError):
        boxes_from_labels_bbox("a,b,c,d")


@pytest.mark.skipif(not (DATA / "camtrap").is_dir(), reason="reference data not present")
def test_all_real_labels_bboxes_parse_into_masks() -> None:
    with open(DATA / "camtrap" / "labels.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["bbox"]]
    assert len(rows) > 50
    for r in rows:
        boxes = boxes_from_labels_bbox(r["bbox"])
        m = mask_from_boxes(boxes, (48, 64))
        assert 0 < m.mean() <= 1.0, r["file"]


def test_read_megadetector(tmp_path: Path) -> None:
    out = {
        "info": {"format_version": "1.3", "detector": "md_v5a.0.0.pt"},
        "detection_categories": {"1": "animal", "2": "person", "3": "vehicle"},
        "images": [
            {
                "file": "cam1/a.jpg",
                "max_detection_conf": 0.9,
                "detections": [
                    {"category": "1", "conf": 0.9, "bbox": [0.1, 0.2, 0.3, 0.4]},
                    {"category": "2", "conf": 0.3, "bbox": [0.5, 0.5, 0.1, 0.1]},
                ],
            },
            {"file": "cam1/b.jpg", "detections": []},
            {"file": "cam1/broken.jpg", "failure": "Failure image access"},
        ],
    }
    p = tmp_path / "md.json"
    p.write_text(json.dumps(out))
    res = read_megadetector(p)
    assert set(res) == {"cam1/a.jpg", "cam1/b.jpg", "cam1/broken.jpg"}
    assert [d["category_name"] for d in res["cam1/a.jpg"]] == ["animal", "person"]
    assert res["cam1/b.jpg"] == [] and res["cam1/broken.jpg"] == []
    animals = read_megadetector(p, categories={"animal"}, min_conf=0.5)
    assert [d["bbox"] for d in animals["cam1/a.jpg"]] == [[0.1, 0.2, 0.3, 0.4]]
    bad = tmp_path / "bad.json"
    bad.write_text('{"nothing": 1}')
    with pytest.raises(ValueError, match="MegaDetector"):
        read_megadetector(bad)


@pytest.mark.skipif(not (DATA / "camtrap").is_dir(), reason="reference data not present")
def test_read_real_megadetector_files() -> None:
    found = [
        p
        for p in (DATA / "camtrap" / "_source_annotations").rglob("*.json")
        if '"detection_categories"' in p.read_text(errors="ignore")[:100_000]
    ]
    if not found:
        pytest.skip("no MegaDetector batch output among the source annotations")
    for p in found:
        res = read_megadetector(p)
        assert res
        for dets in res.values():
            for d in dets:
                assert len(d["bbox"]) == 4 and 0 <= d["conf"] <= 1


@pytest.mark.skipif(not (DATA / "pets-masks").is_dir(), reason="reference data not present")
def test_real_trimap(tmp_path: Path) -> None:
    path = DATA / "pets-masks" / "masks" / "Abyssinian_1.png"
    mask, valid = mask_from_file(path)
    assert mask.shape == valid.shape == (256, 384)
    assert set(np.unique(mask)) == {0.0, 1.0} and set(np.unique(valid)) == {0.0, 1.0}
    assert mask[valid == 0].sum() == 0  # the boundary is neither pet nor valid
    assert mask.mean() == pytest.approx(0.0956, abs=0.03)  # labels.csv fg_frac
    small, _ = mask_from_file(path, shape=(64, 96))
    assert small.shape == (64, 96) and set(np.unique(small)) <= {0.0, 1.0}
    assert energy(mask, mask) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="cannot read"):
        mask_from_file(tmp_path / "missing.png")
