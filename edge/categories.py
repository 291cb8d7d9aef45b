"""The four categories every camera-trap frame falls in, as MegaDetector names them.

The default bundle's head predicts exactly these (in this order); labels from any source
(species names, "empty", "human", MegaDetector classes) map onto them with :func:`md_category`.
Which names mean a person or a vehicle is `edge.kinds`' rule, the one the results file and
the Camtrap DP export follow too.
"""

from __future__ import annotations

from edge.kinds import is_human, is_vehicle

CATEGORIES = ("animal", "empty", "person", "vehicle")  # sorted: the head's class order

_EMPTY = {"empty", "blank", "none", "nothing"}
_UNKNOWN = {"", "unknown", "unidentified", "unclassified"}


def md_category(label: str) -> str | None:
    """ "empty", "person", "vehicle" or "animal" for a label; None where it says nothing
    ("unknown"). A frame with several ("human+vehicle") takes the first that is not an animal."""
    parts = [p.strip().lower() for p in label.replace(";", "+").split("+")]
    if all(p in _UNKNOWN for p in parts):
        return None
    for p in parts:
        if is_human(p):
            return "person"
        if is_vehicle(p):
            return "vehicle"
    if all(p in _EMPTY for p in parts):
        return "empty"
    return "animal"
