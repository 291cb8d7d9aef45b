"""One batch of decoded frames -> a scored frame each: class, softmax, Over-MAP against the
best mask there is, and the fused confidence. Shared by `edge watch` and `edge evaluate`.

The map is the bundle's Grad-CAM (`cam`) or, for a bundle with an attention head, its attention
map (`map_source="attention"`); `Scored.cam` holds the map that was scored, which the overlay
draws. The mask comes from the sources of edge.mask_sources (the segmenter; the camera's background
model once it is ready; masks given by the caller, for evaluation), picked by its `choose`.
Scoring changes nothing: the background models learn in `learn`, a stage of its own that the
caller runs after the triage, so what a frame is decided on never depends on when it is scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edge.background import CameraBackgrounds
from edge.bundle import Manifest
from edge.fusion import apply_fusion, features
from edge.mask_sources import BackgroundMasks, GivenMasks, MaskSource, SegmenterMasks, choose
from edge.overmap import FrameScore, entropy, score_frame
from edge.runtime import Outputs, Runtime


@dataclass
class Scored:
    """A frame's score and the figures the policy and the reports need beside it."""

    score: FrameScore
    fused: float
    entropy: float
    is_empty_class: bool
    is_human: bool
    background_ready: bool
    probs: np.ndarray
    cam: np.ndarray  # the map Over-MAP was scored against (cam or attention), [h,w]
    cues: np.ndarray | None = None  # the frame's row of edge.fusion.features, FEATURES order
    guess: tuple[str, float] | None = None  # the guess head's top name and probability


MAP_SOURCES = ("cam", "attention")


class MapSourceError(ValueError):
    """The map source asked for is not one the bundle returns; says which it has."""


def check_map_source(manifest: Manifest, source: str) -> None:
    """Raise MapSourceError unless the bundle returns the map `source` ("cam", "attention")."""
    if source not in MAP_SOURCES:
        raise MapSourceError(f"map {source!r}: must be one of {', '.join(MAP_SOURCES)}")
    have = manifest.classifier.maps
    if source not in have:
        raise MapSourceError(
            f"map {source!r}: this bundle's classifier ({manifest.classifier.name}, "
            f"{manifest.classifier.head_kind} head) returns only {', '.join(have)}; export one "
            "with an attention head (`edge train --head attention`, then `edge export "
            "--classifier`) or score against --map cam"
        )


class Scorer:
    """Runs the bundle on batches of frames and scores each one (see the module docstring)."""

    def __init__(
        self,
        runtime: Runtime,
        manifest: Manifest,
        *,
        backgrounds: CameraBackgrounds | None = None,
        measure: str = "energy",
        fusion: dict | None = None,
        map_source: str = "cam",
    ) -> None:
        check_map_source(manifest, map_source)  # at start, not at the first frame
        self.map_source = map_source
        self.runtime = runtime
        self.manifest = manifest
        self.backgrounds = backgrounds
        self.measure = measure
        self.fusion = fusion if fusion is not None else manifest.fusion
        spec = manifest.classifier
        self.classes = spec.classes
        self.empty = [i for i, c in enumerate(spec.classes) if c in spec.empty_classes]
        self.human = {i for i, c in enumerate(spec.classes) if c in spec.human_classes}
        self.sources: list[MaskSource] = [SegmenterMasks()]
        self._background = None
        if backgrounds is not None:
            self._background = BackgroundMasks(backgrounds, spec.input)
            self.sources.append(self._background)

    def score(
        self,
        images: Sequence[np.ndarray],
        cameras: Sequence[str],
        *,
        masks: Sequence[np.ndarray | None] | None = None,
        outputs: Outputs | None = None,
    ) -> list[Scored]:
        """Score a batch; nothing changes (the background models learn in `learn`).

        `masks`: full-frame masks to use instead of the model's (evaluation). `outputs`: the
        bundle's results for these images when already run (the watcher runs the models in
        its own thread, ahead of scoring).
        """
        out = outputs if outputs is not None else self.runtime.run(images)
        sources = list(self.sources)
        if masks is not None:
            sources.append(GivenMasks(masks, self.manifest.classifier.input))
        found = {src.name: src.masks(images, cameras, out) for src in sources}
        maps = out.attention if self.map_source == "attention" else out.cam
        if maps is None:
            raise MapSourceError(f"the runtime returned no {self.map_source!r} map")
        scores, ready = [], []
        for i in range(len(images)):
            mask, source = choose({name: m[i] for name, m in found.items()})
            ready.append(found.get("background", [None] * len(images))[i] is not None)
            scores.append(
                score_frame(
                    out.probs[i],
                    maps[i],
                    mask,
                    classes=self.classes,
                    measure=self.measure,
                    mask_source=source,
                )
            )
        X = features(
            out.probs,
            [s.overmap for s in scores],
            [s.foreground_fraction for s in scores],
            empty_index=self.empty or None,
        )
        fused = apply_fusion(self.fusion, X)
        ent = entropy(out.probs, normalise=True)
        names = self.manifest.classifier.guess_classes
        guesses: list[tuple[str, float] | None] = [None] * len(scores)
        if out.guess is not None and names:
            top = out.guess.argmax(1)
            guesses = [(names[k], float(out.guess[i, k])) for i, k in enumerate(top)]
        result = []
        for i, s in enumerate(scores):
            is_empty = s.class_index in self.empty
            result.append(
                Scored(
                    score=s,
                    fused=float(fused[i]),
                    entropy=float(np.atleast_1d(ent)[i]),
                    is_empty_class=is_empty,
                    is_human=s.class_index in self.human,
                    background_ready=ready[i],
                    probs=out.probs[i],
                    cam=maps[i],
                    cues=X[i],
                    guess=guesses[i],
                )
            )
        return result

    def learn(
        self, images: Sequence[np.ndarray], cameras: Sequence[str], scored: Sequence[Scored]
    ) -> None:
        """The background models' stage, after the triage: each camera's model takes its
        frames in order, those confidently showing an animal kept out of the scene."""
        if self._background is None:
            return
        animals = [
            bool(self.empty) and not s.is_empty_class and s.score.softmax >= 0.5 for s in scored
        ]
        self._background.learn(images, cameras, animals)
