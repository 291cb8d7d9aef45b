"""Where the animal is: the mask sources Over-MAP scores a frame's map against.

Each source is one small class with one method, `masks`, giving a mask per frame of a batch
as a map of the classifier's view (or None where it has none for that frame); `choose` is the
one rule that picks among them. A new kind of mask (a detector's boxes, say) is a new class
here, not another branch in the scorer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

from edge.background import CameraBackgrounds, pick_mask
from edge.bundle import InputSpec
from edge.preprocess import view_of
from edge.runtime import Outputs


class MaskSource(Protocol):
    """Masks for a batch of frames, in the classifier's view; None where there is none."""

    name: str

    def masks(
        self, images: Sequence[np.ndarray], cameras: Sequence[str], outputs: Outputs
    ) -> list[np.ndarray | None]: ...


class SegmenterMasks:
    """The bundle's segmenter (its `foreground` output): always there."""

    name = "segmenter"

    def masks(
        self, images: Sequence[np.ndarray], cameras: Sequence[str], outputs: Outputs
    ) -> list[np.ndarray | None]:
        return [outputs.foreground[i, 0] for i in range(len(images))]


class BackgroundMasks:
    """What differs from the camera's learnt empty scene, once its model has seen enough of
    that camera (day and night apart). It learns only in `learn`, the stage after triage."""

    name = "background"

    def __init__(self, backgrounds: CameraBackgrounds, spec: InputSpec) -> None:
        self.backgrounds = backgrounds
        self.spec = spec

    def masks(
        self, images: Sequence[np.ndarray], cameras: Sequence[str], outputs: Outputs
    ) -> list[np.ndarray | None]:
        found: list[np.ndarray | None] = []
        for image, camera in zip(images, cameras, strict=True):
            fg = self.backgrounds.foreground(camera, image)
            found.append(None if fg is None else view_of(fg, image.shape[:2], self.spec))
        return found

    def learn(
        self, images: Sequence[np.ndarray], cameras: Sequence[str], animals: Sequence[bool]
    ) -> None:
        """Feed each camera's model its frames in order; a frame showing an animal stays out
        of the scene's memory."""
        for image, camera, animal in zip(images, cameras, animals, strict=True):
            self.backgrounds.update(camera, image, has_animal=animal)


class GivenMasks:
    """Full-frame masks from the caller (ground truth, detector boxes), for evaluation."""

    name = "file"

    def __init__(self, given: Sequence[np.ndarray | None], spec: InputSpec) -> None:
        self.given = given
        self.spec = spec

    def masks(
        self, images: Sequence[np.ndarray], cameras: Sequence[str], outputs: Outputs
    ) -> list[np.ndarray | None]:
        return [
            None if g is None else view_of(g, image.shape[:2], self.spec)
            for g, image in zip(self.given, images, strict=True)
        ]


def choose(found: Mapping[str, np.ndarray | None]) -> tuple[np.ndarray | None, str | None]:
    """The mask a frame is scored against, and its source's name: a given mask wins; else the
    segmenter's and the background's, combined when both are there (edge.background.pick_mask)."""
    if found.get("file") is not None:
        return found["file"], "file"
    return pick_mask(found.get("segmenter"), found.get("background"))
