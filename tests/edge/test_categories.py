"""Labels from every source map onto the four categories the default head predicts."""

from __future__ import annotations

import csv
from collections import Counter

from conftest import CAMTRAP

from edge.categories import CATEGORIES, md_category


def test_labels_map_to_the_megadetector_categories() -> None:
    assert md_category("empty") == "empty"
    assert md_category("Human") == "person"
    assert md_category("person") == "person"
    assert md_category("vehicle") == "vehicle"
    assert md_category("human+vehicle") == "person"  # not empty, whichever it is
    assert md_category("mountain lion") == "animal"
    assert md_category("animal") == "animal"
    assert md_category("unknown") is None
    assert md_category("") is None


def test_every_labelled_reference_frame_gets_a_category() -> None:
    with (CAMTRAP / "labels.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    cats = Counter(md_category(r["label"]) for r in rows)
    assert set(cats) == {*CATEGORIES, None}
    # only the unlabelled Serengeti frames say nothing
    assert cats[None] == sum(r["label"] == "unknown" for r in rows)
    assert cats["empty"] == sum(r["label"] == "empty" for r in rows)
