"""The triage thresholds: one model, one set of defaults, one rule for layering them.

Why one owner: the defaults used to be written twice (edge.triage.DEFAULTS for the device,
export.pipeline.DEFAULT_THRESHOLDS for a fresh bundle's manifest). They agreed, at tag 0.7,
empty 0.6, empty_foreground 0.02, but nothing kept them agreeing. These field defaults are now
the only copy: a bundle exported without calibrated thresholds gets them in its manifest, and
a key a manifest leaves out falls back to them on the device.

- ``tag``: a frame is tagged when its fused confidence reaches it, else kept for review.
- ``empty``: "empty" needs the empty class at least this likely ...
- ``empty_foreground``: ... and a foreground share under this.

Layers (bundle manifest < config file < command-line flags) are mappings in which None means
"not set here"; :meth:`Thresholds.merged` applies one. A value out of [0, 1] or an unknown key
is a ValueError that names the key.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field


class Thresholds(BaseModel):
    """A complete set of thresholds, each in [0, 1]."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tag: float = Field(0.7, ge=0, le=1)
    empty: float = Field(0.6, ge=0, le=1)
    empty_foreground: float = Field(0.02, ge=0, le=1)

    def merged(self, overrides: Mapping[str, float | None]) -> Thresholds:
        """These thresholds with `overrides` laid over them; None values leave a key as is.

        >>> Thresholds().merged({"tag": 0.9, "empty": None}).tag
        0.9
        """
        given = check_layer({k: v for k, v in overrides.items() if v is not None})
        return self.model_copy(update=given) if given else self

    def as_dict(self) -> dict[str, float]:
        return {k: float(getattr(self, k)) for k in KEYS}

    @classmethod
    def of(cls, thresholds: Thresholds | Mapping[str, float]) -> Thresholds:
        """A Thresholds from either itself or a plain mapping laid over the defaults; keys the
        model does not know are ignored (a manifest may keep some, see :func:`check_layer`)."""
        if isinstance(thresholds, Thresholds):
            return thresholds
        return DEFAULT.merged({k: v for k, v in thresholds.items() if k in KEYS})


KEYS: tuple[str, ...] = tuple(Thresholds.model_fields)


def check_layer(
    layer: Mapping[str, float | None], *, keep_unknown: bool = False
) -> dict[str, float]:
    """One layer's set values as floats, each checked to lie in [0, 1]; None values dropped.

    An unknown key is refused unless `keep_unknown` (a bundle manifest's own keys, which a
    later export may add and this triage does not read, pass through unchecked).
    """
    out: dict[str, float] = {}
    for key, value in layer.items():
        if value is None:
            continue
        if key not in KEYS:
            if keep_unknown:
                out[key] = float(value)
                continue
            raise ValueError(f"unknown threshold {key!r}; known: {', '.join(KEYS)}")
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"threshold {key} = {value!r}: not a number") from None
        if math.isnan(v) or not 0.0 <= v <= 1.0:
            raise ValueError(f"threshold {key} = {value}: must be between 0 and 1")
        out[key] = v
    return out


DEFAULT = Thresholds()
