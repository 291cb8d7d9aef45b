"""What a class name stands for: an empty frame, a person, a vehicle or an animal.

The one owner of that rule: the MegaDetector results file (detection category) and the Camtrap
DP export (observationType) both ask :func:`kind_of`, through
:meth:`edge.results.BundleInfo.kind`, so the two files never disagree about a frame.

A bundle names its own empty and human classes in its manifest; those come first. Names are
then matched against explicit lists: generic words ("person", "truck") and the ImageNet
classes that show a person or a vehicle, since the default bundle's classifier speaks
ImageNet and a jeep on a camera trap is a vehicle, not an animal. Matching ignores case and
treats spaces, hyphens and underscores alike ("garbage truck" is "garbage_truck").
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

Kind = Literal["empty", "human", "vehicle", "animal"]

HUMAN_NAMES = (
    "human", "person", "people", "humans", "homo sapiens",
    # ImageNet: the classes whose subject is a person
    "ballplayer", "groom", "scuba_diver",
)  # fmt: skip
VEHICLE_NAMES = (
    "vehicle", "car", "truck", "bus", "van", "motorcycle", "motorbike", "bicycle", "bike",
    "quad", "atv", "train", "boat",
    # ImageNet: road and off-road vehicles
    "ambulance", "beach_wagon", "cab", "convertible", "jeep", "limousine", "minivan",
    "Model_T", "racer", "sports_car", "police_van", "pickup", "moving_van", "garbage_truck",
    "fire_engine", "tow_truck", "trailer_truck", "minibus", "school_bus", "trolleybus",
    "recreational_vehicle", "half_track", "tank", "go-kart", "golfcart", "snowmobile",
    "snowplow",
    # ImageNet: farm and work vehicles
    "tractor", "harvester", "thresher", "forklift",
    # ImageNet: two and three wheels, carts pulled by animals or people
    "motor_scooter", "moped", "mountain_bike", "bicycle-built-for-two", "tricycle",
    "unicycle", "horse_cart", "oxcart", "jinrikisha", "dogsled",
    # ImageNet: rail and small boats (tracks and rivers run past camera traps)
    "streetcar", "freight_car", "passenger_car", "electric_locomotive", "steam_locomotive",
    "bullet_train", "amphibian", "canoe", "speedboat", "lifeboat",
)  # fmt: skip


def normalise(name: str) -> str:
    """The form names are compared in: lower case, '_' for spaces and hyphens."""
    return "_".join(name.strip().lower().replace("-", " ").replace("_", " ").split())


_HUMAN = frozenset(map(normalise, HUMAN_NAMES))
_VEHICLE = frozenset(map(normalise, VEHICLE_NAMES))


def is_vehicle(name: str) -> bool:
    return normalise(name) in _VEHICLE


def is_human(name: str) -> bool:
    return normalise(name) in _HUMAN


def kind_of(
    label: str | None,
    *,
    empty: Iterable[str] = (),
    human: Iterable[str] = (),
    vehicle: Iterable[str] = (),
) -> Kind:
    """'empty', 'human', 'vehicle' or 'animal' for a class name.

    `empty`, `human`, `vehicle`: a bundle's own classes of each kind (its manifest's), which
    come before the lists here; only a bundle says which of its classes mean "empty". Any
    other name is an animal: that is what a camera trap is for."""
    if label is None:
        return "animal"
    if label in empty:
        return "empty"
    if label in human:
        return "human"
    if label in vehicle:
        return "vehicle"
    key = normalise(label)
    if key in _HUMAN:
        return "human"
    if key in _VEHICLE:
        return "vehicle"
    return "animal"
