"""Run a verified bundle on a batch of decoded frames: classifier (logits, map) and segmenter.

The runtime owns the two ONNX Runtime sessions. At load it checks each model against the
manifest (input `image`, outputs `logits`/`cam` and `foreground`, their static dimensions),
because a bundle whose files pass their checksums can still have been exported wrongly, and
that must fail at start with the file named, not on the first frame in the field.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort

from edge.bundle import Bundle, InputSpec
from edge.linear_head import apply_head, load_head
from edge.overmap import softmax
from edge.preprocess import normalise, resize_frame
from edge.providers import OpenedSession, open_session, provider_order

DEFAULT_MAX_BATCH = 32


@dataclass
class Outputs:
    """One batch's results, row i for images[i].

    logits [N,C] float32; probs [N,C] softmax of logits; cam [N,h,w] >= 0 (the top class's map,
    not upsampled); foreground [N,1,h,w] probability 0..1; providers: model -> provider used.
    attention [N,h,w]: the attention head's map (peak 1 per frame), when the manifest's
    `maps` lists it, else None.
    """

    logits: np.ndarray
    probs: np.ndarray
    cam: np.ndarray
    foreground: np.ndarray
    providers: dict[str, str] = field(default_factory=dict)
    guess: np.ndarray | None = None  # softmax [N,G] of the bundle's guess head, if it has one
    # the backbone's pooled vector [N,K] and map layer [N,K,h,w], when asked for (learning)
    features: np.ndarray | None = None
    fmap: np.ndarray | None = None
    attention: np.ndarray | None = None

    @property
    def top(self) -> np.ndarray:
        """Index of the most probable class per frame, [N] int."""
        return self.probs.argmax(axis=1)

    def __len__(self) -> int:
        return len(self.logits)

    @classmethod
    def join(cls, parts: Sequence[Outputs]) -> Outputs:
        """The results of consecutive batches as one."""
        if len(parts) == 1:
            return parts[0]
        return cls(
            logits=np.concatenate([p.logits for p in parts]),
            probs=np.concatenate([p.probs for p in parts]),
            cam=np.concatenate([p.cam for p in parts]),
            foreground=np.concatenate([p.foreground for p in parts]),
            providers=parts[0].providers,
            guess=None if parts[0].guess is None else np.concatenate([p.guess for p in parts]),
            features=_cat([p.features for p in parts]),
            fmap=_cat([p.fmap for p in parts]),
            attention=_cat([p.attention for p in parts]),
        )


def _cat(arrays: Sequence[np.ndarray | None]) -> np.ndarray | None:
    return None if arrays[0] is None else np.concatenate(arrays)  # type: ignore[arg-type]


@dataclass
class Prepared:
    """One batch made ready for the models: views uint8 [N,H,W,3] (the classifier's resized
    frames, on which the review overlay blends the map) and the models' normalised inputs."""

    views: np.ndarray
    x_cls: np.ndarray
    x_seg: np.ndarray


def _probs(logits: np.ndarray) -> np.ndarray:
    """Row-wise probabilities by edge.overmap's softmax (the one implementation), in float32
    like the rest of Outputs."""
    return softmax(np.asarray(logits), axis=1).astype(np.float32)


def _dim_ok(actual: object, expected: int) -> bool:
    """A symbolic (str) or unknown (None) dimension accepts anything; an int must match,
    unless the expected one is negative (any size will do)."""
    return not isinstance(actual, int) or expected < 0 or actual == expected


def _check_io(
    session: ort.InferenceSession,
    where: str,
    input_spec: InputSpec,
    outputs: dict[str, tuple[int, ...]],
) -> None:
    """Raise RuntimeError naming the file if the model's input/outputs break the manifest.

    `outputs` maps each required output name to its expected dimensions after the batch.
    """
    inputs = session.get_inputs()
    if len(inputs) != 1 or inputs[0].name != "image":
        names = [i.name for i in inputs]
        raise RuntimeError(f"{where}: expects inputs {names}, the bundle contract is ['image']")
    shape = list(inputs[0].shape)
    want = [3, *input_spec.size]
    if len(shape) != 4 or not all(_dim_ok(a, e) for a, e in zip(shape[1:], want, strict=True)):
        expected = ", ".join(map(str, want))
        raise RuntimeError(
            f"{where}: input 'image' has shape {shape}, the manifest says [N, {expected}]"
        )
    if isinstance(shape[0], int):
        raise RuntimeError(
            f"{where}: batch dimension fixed at {shape[0]}; re-export with a dynamic batch"
        )
    have = {o.name: list(o.shape) for o in session.get_outputs()}
    for name, dims in outputs.items():
        if name not in have:
            raise RuntimeError(
                f"{where}: no output {name!r} (outputs are {sorted(have)}), the bundle contract"
                f" needs {sorted(outputs)}"
            )
        got = have[name]
        if len(got) != len(dims) + 1 or not all(
            _dim_ok(a, e) for a, e in zip(got[1:], dims, strict=True)
        ):
            raise RuntimeError(
                f"{where}: output {name!r} has shape {got}, the manifest says"
                f" [N, {', '.join(map(str, dims))}]"
            )


def _shared_geometry(a: InputSpec, b: InputSpec) -> bool:
    """True when both models get the same resized pixels (only normalisation differs)."""
    same = a.size == b.size and a.resize == b.resize
    return same and (a.resize != "letterbox" or a.mean == b.mean)  # letterbox pads with mean


class Runtime:
    """The two sessions of a bundle and how to feed them. Build with :meth:`from_bundle`."""

    def __init__(
        self,
        bundle: Bundle,
        classifier: OpenedSession,
        segmenter: OpenedSession | None,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        features: bool = False,
    ) -> None:
        self.bundle = bundle
        self.classifier = classifier
        self.segmenter = segmenter
        self.max_batch = max_batch
        m = bundle.manifest
        self._cls_spec = m.classifier.input
        self._seg_spec = m.segmenter.input
        self._shared = _shared_geometry(self._cls_spec, self._seg_spec)
        self._cls_dtype = _input_dtype(classifier.session)
        self._guess = bool(m.classifier.guess_classes)
        self._attention = "attention" in m.classifier.maps
        self._features = features
        self._head = _read_head(bundle, len(m.classifier.classes))
        # None: the classifier's graph returns `foreground` too (one backbone pass)
        self._seg_dtype = _input_dtype(segmenter.session) if segmenter else self._cls_dtype

    @classmethod
    def from_bundle(
        cls,
        bundle: Bundle,
        *,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        max_batch: int = DEFAULT_MAX_BATCH,
        features: bool = False,
    ) -> Runtime:
        """Open both models with the first working provider each (see `edge.providers`).

        `providers`: an explicit order (short or full names); None means $OVERMAP_PROVIDERS,
        else the bundle's list, else TensorRT, CUDA, CPU. `threads`: intra-op threads per
        session (default all cores). Each session must run a zero batch before it is kept.
        `features`: also return the backbone's `features` and `fmap` (what `edge learn`
        trains on); the graph must have them, as it must for a bundle with a learned head.
        Raises RuntimeError naming the file when a model does not match the manifest.
        """
        m = bundle.manifest
        order = provider_order(providers, fallback=m.providers)
        c, s = m.classifier, m.segmenter
        n_classes = len(c.classes)
        head = _read_head(bundle, n_classes)

        def check_classifier(session: ort.InferenceSession) -> None:
            outputs: dict[str, tuple[int, ...]] = {}
            if head is None:
                outputs = {"logits": (n_classes,), "cam": tuple(c.cam_size)}
            if head is not None or features:
                k = (head[0].shape[1],) if head is not None else (-1,)
                outputs |= {"features": k, "fmap": (*k, *c.cam_size)}
            if s.in_classifier:
                outputs["foreground"] = (1, *s.output_size)
            if c.guess_classes:
                outputs["guess"] = (len(c.guess_classes),)
            if "attention" in c.maps:
                outputs["attention"] = tuple(c.cam_size)
            _check_io(session, str(bundle.classifier_path), c.input, outputs)

        def check_segmenter(session: ort.InferenceSession) -> None:
            outputs = {"foreground": (1, *s.output_size)}
            _check_io(session, str(bundle.segmenter_path), s.input, outputs)

        models = [(bundle.classifier_path, c.input, check_classifier, c.precision)]
        if not s.in_classifier:
            models.append((bundle.segmenter_path, s.input, check_segmenter, s.precision))
        opened: list[OpenedSession | None] = []
        for path, spec, check, precision in models:
            probe = np.zeros((1, 3, *spec.size), np.float32)
            opened.append(
                open_session(
                    path,
                    order,
                    probe=probe,
                    threads=threads,
                    precision=precision,
                    max_batch=max_batch,
                    check=check,
                )
            )
        segmenter = opened[1] if len(opened) > 1 else None
        return cls(bundle, opened[0], segmenter, max_batch=max_batch, features=features)

    @property
    def providers(self) -> dict[str, str]:
        """Which provider runs which model, e.g. {"classifier": "CUDAExecutionProvider", ...}."""
        seg = self.segmenter.provider if self.segmenter else self.classifier.provider
        return {"classifier": self.classifier.provider, "segmenter": seg}

    def prepare(self, images: Sequence[np.ndarray]) -> Prepared:
        """RGB uint8 frames -> what the models take (float32 NCHW) and the classifier's view.

        When both models want the same geometry the frames are resized once. Pure numpy and
        OpenCV, no session: the watcher runs it in a loader thread while the models run.
        """
        if not images:
            raise ValueError("run() needs at least one image")
        views = np.stack([resize_frame(im, self._cls_spec) for im in images])
        x_cls = normalise(views, self._cls_spec)
        if self.segmenter is None:
            return Prepared(views, x_cls, x_cls)
        if self._shared:
            seg_frames = views
        else:
            seg_frames = np.stack([resize_frame(im, self._seg_spec) for im in images])
        return Prepared(views, x_cls, normalise(seg_frames, self._seg_spec))

    def run(self, images: Sequence[np.ndarray]) -> Outputs:
        """Classify and segment decoded RGB uint8 frames (any sizes, any count >= 1).

        Batches above `max_batch` are run in chunks, so memory stays bounded and a TensorRT
        engine built for 1..max_batch is never rebuilt.
        """
        step = self.max_batch
        return Outputs.join(
            [
                self.infer(self.prepare(images[i : i + step]))
                for i in range(0, max(len(images), 1), step)
            ]
        )

    def infer(self, batch: Prepared) -> Outputs:
        """Run the models on one prepared batch (at most `max_batch` frames)."""
        if len(batch.views) > self.max_batch:
            raise ValueError(f"{len(batch.views)} frames in one batch, at most {self.max_batch}")
        feed = {"image": batch.x_cls.astype(self._cls_dtype, copy=False)}
        names = ["logits", "cam"] if self._head is None else []
        if self._head is not None or self._features:
            names += ["features", "fmap"]
        if self.segmenter is None:
            names.append("foreground")
        if self._guess:
            names.append("guess")
        if self._attention:
            names.append("attention")
        got = dict(zip(names, self.classifier.session.run(names, feed), strict=True))
        if self.segmenter is not None:
            (got["foreground"],) = self.segmenter.session.run(
                ["foreground"], {"image": batch.x_seg.astype(self._seg_dtype, copy=False)}
            )
        feats = fmap = None
        if "features" in got:
            feats = np.asarray(got["features"], np.float32)
            fmap = np.asarray(got["fmap"], np.float32)
        if self._head is not None:
            logits, cam = apply_head(*self._head, feats, fmap)
        else:
            logits = np.asarray(got["logits"], np.float32)
            cam = np.asarray(got["cam"], np.float32)
        guess = got.get("guess")
        attention = got.get("attention")
        return Outputs(
            logits=logits,
            probs=_probs(logits),
            cam=cam,
            foreground=np.asarray(got["foreground"], np.float32),
            providers=self.providers,
            guess=None if guess is None else _probs(guess),
            features=feats if self._features else None,
            fmap=fmap if self._features else None,
            attention=None if attention is None else np.asarray(attention, np.float32),
        )

    def __repr__(self) -> str:
        return f"Runtime({self.bundle!r}, providers={self.providers})"


def _read_head(bundle: Bundle, n_classes: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The bundle's learned head (weight [C,K], bias [C]), None without one; RuntimeError
    naming the file when it is unreadable or does not fit the manifest's classes."""
    path = bundle.head_path
    if path is None:
        return None
    try:
        weight, bias = load_head(path)
    except (OSError, ValueError) as e:
        raise RuntimeError(f"{path}: not a usable head ({e})") from e
    if weight.shape[0] != n_classes:
        raise RuntimeError(f"{path}: {weight.shape[0]} classes, the manifest names {n_classes}")
    return weight, bias


def _input_dtype(session: ort.InferenceSession) -> type[np.floating]:
    """float16 for a model exported with half-precision inputs, else float32."""
    return np.float16 if session.get_inputs()[0].type == "tensor(float16)" else np.float32
