"""The thresholds' one owner: defaults, layering, and range checks that name the key."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from edge.thresholds import DEFAULT, KEYS, Thresholds, check_layer
from edge.triage import Evidence, decide


def test_defaults_are_the_documented_ones() -> None:
    assert DEFAULT.as_dict() == {"tag": 0.7, "empty": 0.6, "empty_foreground": 0.02}
    assert KEYS == ("tag", "empty", "empty_foreground")


def test_merged_layers_and_none_leaves_a_key_alone() -> None:
    bundle = Thresholds().merged({"tag": 0.9, "empty": 0.8})
    flags = bundle.merged({"tag": None, "empty": 0.5})
    assert flags.as_dict() == {"tag": 0.9, "empty": 0.5, "empty_foreground": 0.02}
    assert bundle.empty == 0.8  # frozen: merging made a new one
    with pytest.raises(ValidationError):
        bundle.tag = 0.1  # type: ignore[misc]


@pytest.mark.parametrize(
    "layer, named",
    [
        ({"empty": 1.01}, "empty"),
        ({"tag": -1}, "tag"),
        ({"empty_foreground": float("nan")}, "empty_foreground"),
        ({"tga": 0.5}, "tga"),
    ],
)
def test_merged_refuses_out_of_range_and_unknown_keys_naming_them(layer: dict, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        Thresholds().merged(layer)


def test_the_model_forbids_extra_keys_and_out_of_range() -> None:
    with pytest.raises(ValidationError):
        Thresholds(tag=0.5, colour=1.0)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        Thresholds(tag=2.0)


def test_a_manifest_layer_keeps_keys_it_does_not_know() -> None:
    assert check_layer({"tag": 0.5, "custom": 3.0}, keep_unknown=True) == {
        "tag": 0.5,
        "custom": 3.0,
    }


def test_the_triage_takes_a_model_or_a_partial_mapping_over_the_defaults() -> None:
    e = Evidence(
        camera="c",
        time=None,
        label="elk",
        is_empty_class=False,
        is_human=False,
        softmax=0.72,
        fused=0.72,
        foreground=0.1,
        background_ready=True,
    )
    assert decide(e, {}) == "tagged"  # default tag 0.7
    assert decide(e, {"empty": 0.9}) == "tagged"
    assert decide(e, Thresholds(tag=0.8)) == "review"
    assert decide(e, {"tag": 0.8, "custom": 1.0}) == "review"
