"""One batch of decoded frames -> a scored frame each: class, softmax, Over-MAP against the
best mask there is, and the fused confidence. Shared by `edge watch` and `edge evaluate`.

The mask: the bundle's segmenter always; the camera's background model when it has seen
enough of that camera's frames (day and night apart); both combined when both are there.
Masks given by the caller (ground truth, detector boxes) replace them, for evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edge.background import CameraBackgrounds, pick_mask
from edge.bundle import Manifest
from edge.fusion import apply_fusion, features
from edge.overmap import FrameScore, entropy, score_frame
from edge.preprocess import view_of
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
    cam: np.ndarray
    cues: np.ndarray | None = None  # the frame's row of edge.fusion.features, FEATURES order
    guess: tuple[str, float] | None = None  # the guess head's top name and probability


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
    ) -> None:
        self.runtime = runtime
        self.manifest = manifest
        self.backgrounds = backgrounds
        self.measure = measure
        self.fusion = fusion if fusion is not None else manifest.fusion
        spec = manifest.classifier
        self.classes = spec.classes
        self.empty = [i for i, c in enumerate(spec.classes) if c in spec.empty_classes]
        self.human = {i for i, c in enumerate(spec.classes) if c in spec.human_classes}

    def score(
        self,
        images: Sequence[np.ndarray],
        cameras: Sequence[str],
        *,
        masks: Sequence[np.ndarray | None] | None = None,
        outputs: Outputs | None = None,
    ) -> list[Scored]:
        """Score a batch, in order (the background models learn from each frame in turn).

        `masks`: full-frame masks to use instead of the model's (evaluation). `outputs`: the
        bundle's results for these images when already run (the watcher runs the models in
        its own thread, ahead of scoring).
        """
        out = outputs if outputs is not None else self.runtime.run(images)
        spec = self.manifest.classifier.input
        scores, ready = [], []
        for i, image in enumerate(images):
            learned = out.foreground[i, 0]
            given = masks[i] if masks is not None else None
            background = None
            if self.backgrounds is not None:
                bg = self.backgrounds.foreground(cameras[i], image)
                if bg is not None:
                    background = view_of(bg, image.shape[:2], spec)
            ready.append(background is not None)
            if given is not None:
                mask, source = view_of(given, image.shape[:2], spec), "file"
            else:
                mask, source = pick_mask(learned, background)
            scores.append(score_frame(out.probs[i], out.cam[i], mask, classes=self.classes,
                                      measure=self.measure, mask_source=source))
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
            result.append(Scored(
                score=s, fused=float(fused[i]), entropy=float(np.atleast_1d(ent)[i]),
                is_empty_class=is_empty, is_human=s.class_index in self.human,
                background_ready=ready[i], probs=out.probs[i], cam=out.cam[i], cues=X[i],
                guess=guesses[i],
            ))  # fmt: skip
            if self.backgrounds is not None:
                # a frame confidently showing an animal stays out of the scene's memory
                animal = bool(self.empty) and not is_empty and s.softmax >= 0.5
                self.backgrounds.update(cameras[i], images[i], has_animal=animal)
        return result
