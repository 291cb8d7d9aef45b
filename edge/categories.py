"""The four categories every camera-trap frame falls in, as MegaDetector names them.

The default bundle's head predicts exactly these (in this order); labels from any source
(species names, "empty", "human", MegaDetector classes) map onto them with :func:`md_category`.
"""

from __future__ import annotations

CATEGORIES = ("animal", "empty", "person", "vehicle")  # sorted: the head's class order

_EMPTY = {"empty", "blank", "none", "nothing"}
_PERSON = {"person", "human", "people", "humans", "homo sapiens"}
_VEHICLE = {"vehicle", "car", "truck", "motorcycle", "motorbike", "bicycle"}
_UNKNOWN = {"", "unknown", "unidentified", "unclassified"}


def md_category(label: str) -> str | None:
    """"empty", "person", "vehicle" or "animal" for a label; None where it says nothing
    ("unknown"). A frame with several ("human+vehicle") takes the first that is not an animal."""
    parts = [p.strip().lower() for p in label.replace(";", "+").split("+")]
    if all(p in _UNKNOWN for p in parts):
        return None
    for p in parts:
        if p in _PERSON:
            return "person"
        if p in _VEHICLE:
            return "vehicle"
    if all(p in _EMPTY for p in parts):
        return "empty"
    return "animal"
