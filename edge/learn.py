"""The bundle learns from a person's answers: a new linear head, its confidence and thresholds.

The frozen backbone never changes, so learning is logistic regression on the pooled features
(`edge.linear_head`), seconds on the device. One step, :func:`learn_step`, in time order:

1. the latest answers (`test_share`, at least `min_test`) are held back to validate on;
2. the others get out-of-fold probabilities (contiguous folds, each predicted by a head that
   did not see it), from which the fused confidence is calibrated (edge.fusion.fit_fusion)
   and the `tag` threshold chosen for a target error rate among tagged frames
   (:func:`tag_threshold`), the `empty` one likewise among frames set aside as empty;
3. the candidate head is fitted on the bundle's first labels (its training set's features,
   when shipped) and every answer but the held-back ones;
4. candidate and current bundle triage the held-back answers, which neither has seen; the
   candidate is installed only when its workload there is lower: fewer reviews, where one
   wrong automatic decision costs 1 / target_error reviews, and no more animals, people or
   vehicles set aside as empty. A worse bundle is never installed. (The held-back answers
   are frames the current bundle doubted: the frames it decided by itself carry no label, so
   neither bundle's errors there can be counted. Labelling them with the current bundle's
   own decisions hides exactly its mistakes: on MLWIC that blocked the heads that made
   fewer, so it is not done.)

`edge learn OUT` runs the step on the review page's answers (:func:`run_learn`): it caches
the frames' features in OUT/learn, writes the new bundle beside the current one, swaps them
atomically (the old one kept as `<bundle>.prev`) and logs every decision with its figures
in OUT/learn/log.jsonl. `edge simulate` (edge/simulate.py) calls the same step.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import math
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from edge.bundle import (
    MANIFEST,
    Bundle,
    Manifest,
    default_bundle,
    file_entry,
    load_bundle,
    write_manifest,
)
from edge.categories import CATEGORIES, md_category
from edge.durable import fsync_dir
from edge.fusion import FEATURES, apply_fusion, features, fit_fusion
from edge.journal import Journal
from edge.linear_head import HEAD_FILE, apply_head, fit_head, save_head
from edge.overmap import score_frame, softmax
from edge.thresholds import Thresholds
from edge.triage import Evidence, decide

LEARN_DIR = "learn"
LOG_FILE = "log.jsonl"
CACHE_FILE = "features.npz"
TRAIN_FEATURES = "train_features.npz"

# ---- what a person answered ----------------------------------------------------------------


@dataclass(frozen=True)
class Answered:
    """One answered review frame: where it lies now (relative to OUT) and the person's label
    (None: empty)."""

    frame_id: int
    sha256: str
    path: str
    label: str | None
    answered_at: float

    @property
    def key(self) -> str:
        return f"{self.frame_id}:{self.sha256}"


def learn_paths(out: Path, bundle: Path | None) -> tuple[Path, Path]:
    """(the bundle to learn from, where the learned one goes): `bundle` itself; without it
    OUT/bundle once learned, else the default bundle. The bundle shipped inside the package
    is never written: what is learned from it goes to OUT/bundle. `edge watch` picks the
    bundle it runs and follows by the same rule."""
    mine = out / "bundle"
    source = bundle or (mine if (mine / MANIFEST).is_file() else default_bundle())
    packaged = Path(__file__).resolve().parent
    target = mine if source.resolve().is_relative_to(packaged) else source
    return source, target


def answered(journal: Journal) -> list[Answered]:
    """The review page's finished answers, oldest first (the order learning splits them in)."""
    out = []
    for a in journal.answers(state="done"):
        frame = journal.get(a.frame_id)
        if frame is not None:
            out.append(Answered(a.frame_id, frame.sha256, a.dest, a.label, a.answered_at))
    return sorted(out, key=lambda a: (a.answered_at, a.frame_id))


def is_category_bundle(classes: Sequence[str]) -> bool:
    """True for a head over the four MegaDetector categories (empty/animal/person/vehicle)."""
    return sorted(classes) == sorted(CATEGORIES)


def class_index(
    label: str | None, classes: Sequence[str], empty_classes: Sequence[str] = ()
) -> int | None:
    """The bundle's class for a label, None when it has none.

    A category bundle maps any label onto its four classes with edge.categories.md_category
    ("red fox" -> animal, "human" -> person); others match the name (case aside). None or an
    empty-meaning label goes to the bundle's first empty class.
    """
    names = [c.lower() for c in classes]
    if is_category_bundle(classes):
        cat = "empty" if label is None else md_category(label)
        return None if cat is None else names.index(cat)
    if label is None or md_category(label) == "empty":
        return names.index(empty_classes[0].lower()) if empty_classes else None
    key = label.strip().lower()
    return names.index(key) if key in names else None


# ---- the examples learning works on ---------------------------------------------------------


@dataclass
class Examples:
    """Labelled frames in time order, with what a head is fitted on and scored by.

    features [N,K]; fmap [N,K,h,w] (any float dtype); foreground [N,1,h',w'] the segmenter's
    mask; y [N] class indices; keys [N] identities (journal id and sha256, or a file name).
    """

    keys: list[str]
    features: np.ndarray
    fmap: np.ndarray
    foreground: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.keys)

    def take(self, idx: Any) -> Examples:
        idx = np.asarray(idx, int)
        return Examples(
            [self.keys[i] for i in idx],
            self.features[idx],
            self.fmap[idx],
            self.foreground[idx],
            self.y[idx],
        )


@dataclass(frozen=True)
class FirstLabels:
    """The training set a bundle shipped: X [M,K] float32, y [M] class indices, and for each
    row its file and source ("" when unknown), so a replay can leave a camera's frames out."""

    X: np.ndarray
    y: np.ndarray
    files: np.ndarray
    sources: np.ndarray

    def keep(self, mask: np.ndarray) -> FirstLabels:
        return FirstLabels(self.X[mask], self.y[mask], self.files[mask], self.sources[mask])


def first_labels(bundle: Bundle) -> FirstLabels | None:
    """The bundle's training-set features (`train_features.npz`), None when it ships none.

    The file is the one the manifest names (checked by sha256 at load); a bundle that ships
    it without naming it is read too. Labels are class names, or indices into the file's
    own `classes` (else the bundle's); rows whose label the bundle has no class for are
    dropped. Optional `files` and `sources` say where each row came from."""
    c = bundle.manifest.classifier
    path = bundle.root / (c.train_features.path if c.train_features else TRAIN_FEATURES)
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as z:
        X = z["features"].astype(np.float32)
        labels = z["labels"]
        names = z["classes"].astype(str) if "classes" in z else np.asarray(c.classes)
        blank = np.array([""] * len(X))
        files = z["files"].astype(str) if "files" in z else blank
        sources = z["sources"].astype(str) if "sources" in z else blank
    if labels.dtype.kind in "iu":
        labels = names[labels.astype(int)]
    y = np.array(
        [class_index(str(s), c.classes, c.empty_classes) if str(s) else None for s in labels],
        dtype=object,
    )
    known = np.array([v is not None for v in y], bool)
    return FirstLabels(X[known], y[known].astype(int), files[known], sources[known])


def add_first_labels(
    root: Path,
    features: Any,
    labels: Sequence[str],
    files: Sequence[str] | None = None,
    sources: Sequence[str] | None = None,
) -> Path:
    """Ship a training set's features in the bundle at `root` (what the exporter calls):
    `train_features.npz` with features [M,K] as float16, labels [M] (class names) and files
    [M] and sources [M] (where the frames came from, so a replay can leave a camera's own
    frames out), named in the manifest with its sha256. Returns the file's path."""
    X = np.asarray(features, np.float32)
    if X.ndim != 2 or len(labels) != len(X) or (files is not None and len(files) != len(X)):
        raise ValueError(
            f"features [M, K] with one label (and file) per row, got {X.shape}, "
            f"{len(labels)} labels"
        )
    path = Path(root) / TRAIN_FEATURES
    tmp = path.with_name(path.name + ".tmp")  # a new file, never the old one rewritten: a
    with open(tmp, "wb") as f:  # learned bundle may hold the old one as a hard link
        np.savez(
            f,
            features=X.astype(np.float16),
            labels=np.asarray(labels, str),
            files=np.asarray(files if files is not None else [""] * len(X), str),
            sources=np.asarray(sources if sources is not None else [""] * len(X), str),
        )
    tmp.replace(path)
    m = load_bundle(root, verify=False).manifest
    spec = m.classifier.model_copy(
        update={"train_features": file_entry(Path(root), TRAIN_FEATURES)}
    )
    write_manifest(Path(root), m.model_copy(update={"classifier": spec}))
    return path


# ---- the confidence and the thresholds -----------------------------------------------------


def cues(
    probs: np.ndarray,
    cam: np.ndarray,
    foreground: np.ndarray,
    *,
    classes: Sequence[str],
    empty_index: Sequence[int],
    measure: str = "energy",
) -> np.ndarray:
    """The fused confidence's cues [N,F] (edge.fusion.features) for a head's probabilities and
    maps against the segmenter's masks, as edge.scorer computes them for the segmenter."""
    scores = [
        score_frame(
            probs[i],
            cam[i],
            np.asarray(foreground[i, 0], np.float32),
            classes=classes,
            measure=measure,
        )
        for i in range(len(probs))
    ]
    return features(
        probs,
        [s.overmap for s in scores],
        [s.foreground_fraction for s in scores],
        empty_index=list(empty_index) or None,
    )


def tag_threshold(
    confidence: Any, correct: Any, *, target_error: float = 0.02, min_count: int = 20
) -> float:
    """The lowest `tag` threshold t at which frames with confidence >= t are wrong at most
    `target_error` of the time, with at least `min_count` of them (fewer say too little).

    confidence: [N] calibrated confidences of held-out frames (those predicted non-empty: the
    only ones `tag` applies to). correct: [N] bool, their labels right. Returns 1.0 when no
    threshold qualifies (then hardly anything is tagged).

    >>> tag_threshold([0.99] * 30 + [0.5] * 30, [True] * 30 + [False] * 30, min_count=10)
    0.99
    """
    c = np.asarray(confidence, np.float64).ravel()
    ok = np.asarray(correct, bool).ravel()
    if c.shape != ok.shape:
        raise ValueError(f"{c.size} confidences but {ok.size} correctness values")
    if not 0 <= target_error < 1:
        raise ValueError("target_error must be in [0, 1)")
    order = np.argsort(-c, kind="stable")
    c, wrong = c[order], np.cumsum(~ok[order])
    n = np.arange(1, c.size + 1)
    # a threshold is a confidence value: all frames at or above it count (ties together)
    last = np.r_[c[1:] != c[:-1], True] if c.size else np.zeros(0, bool)
    good = last & (n >= min_count) & (wrong <= target_error * n)
    return float(c[good].min()) if good.any() else 1.0


@dataclass(frozen=True)
class Policy:
    """A bundle's triage on held-out frames: head, fused confidence and thresholds."""

    weight: np.ndarray | None  # None: the graph's own head (probs and cams are given)
    bias: np.ndarray | None
    fusion: dict[str, Any] | None
    thresholds: dict[str, float]


def triage_frames(
    probs: np.ndarray,
    cam: np.ndarray,
    foreground: np.ndarray,
    policy: Policy,
    *,
    classes: Sequence[str],
    empty_index: Sequence[int],
    measure: str = "energy",
) -> tuple[list[str], np.ndarray]:
    """Each frame's decision on its own (edge.triage.decide) and its predicted class."""
    X = cues(probs, cam, foreground, classes=classes, empty_index=empty_index, measure=measure)
    fused = apply_fusion(policy.fusion, X)
    pred = probs.argmax(1)
    fg = FEATURES.index("foreground")
    t = Thresholds.of(policy.thresholds)
    decisions = [
        decide(
            Evidence(
                camera="",
                time=None,
                label=classes[k],
                is_empty_class=int(k) in empty_index,
                is_human=False,
                softmax=float(probs[i, k]),
                fused=float(fused[i]),
                foreground=float(X[i, fg]),
                background_ready=False,
            ),
            t,
        )
        for i, k in enumerate(pred)
    ]
    return decisions, pred


def workload(
    decisions: Sequence[str],
    pred: np.ndarray,
    y: np.ndarray,
    *,
    empty_index: Sequence[int],
    target_error: float,
) -> dict[str, Any]:
    """What a triage leaves to do on labelled frames: reviews, wrong automatic decisions, and
    non-empty frames set aside as empty. cost = reviewed + wrong / target_error: at the target
    error rate one wrong automatic decision is worth 1 / target_error frames not reviewed."""
    d = np.asarray(decisions)
    empty_true = np.isin(y, empty_index)
    auto = d != "review"
    said_empty = d == "empty"
    wrong = auto & ((said_empty & ~empty_true) | (~said_empty & (pred != y)))
    reviewed, n_wrong = int((~auto).sum()), int(wrong.sum())
    return {
        "frames": int(d.size),
        "reviewed": reviewed,
        "wrong_auto": n_wrong,
        "empty_lost": int((said_empty & ~empty_true).sum()),
        "non_empty": int((~empty_true).sum()),
        "cost": reviewed + n_wrong / max(target_error, 1e-9),
    }


# ---- one learning step ------------------------------------------------------------------------


@dataclass
class Step:
    """What one learning step decided: `install` the candidate or not, and why (`report`)."""

    install: bool
    policy: Policy | None
    report: dict[str, Any]


def _folds(n: int, k: int) -> list[np.ndarray]:
    return [f for f in np.array_split(np.arange(n), k) if f.size]


def learn_step(
    examples: Examples,
    *,
    classes: Sequence[str],
    empty_index: Sequence[int],
    current: Policy,
    current_probs: np.ndarray,
    current_cam: np.ndarray,
    first: tuple[np.ndarray, np.ndarray] | None = None,
    target_error: float = 0.02,
    test_share: float = 0.2,
    min_test: int = 10,
    min_answers: int = 20,
    folds: int = 5,
    min_count: int = 20,
    C: float = 0.1,
    answer_weight: float | None = None,
    empty_error: float | None = None,
    max_empty_lost: float = 0.01,
    measure: str = "energy",
) -> Step:
    """One learning step on answered frames in time order (see the module docstring).

    current: the installed bundle's policy; current_probs/current_cam: its softmax [T,C] and
    maps [T,h,w] on the held-back answers (the last T of `examples`, T as this function cuts
    it: use :func:`held_back`). first: the bundle's first labels (X [M,K], y [M]).
    answer_weight: each answer's weight against a first label's; None: the answers together
    weigh as much as the first labels (at least 1 each).
    empty_error: the share of frames set aside as empty that may be something else, which
    sets the `empty` threshold (default: target_error). max_empty_lost: the share of the
    held-out non-empty frames a candidate may set aside as empty, if the current bundle
    loses fewer.
    """
    n, n_cls = len(examples), len(classes)
    test = held_back(n, test_share=test_share, min_test=min_test)
    report: dict[str, Any] = {
        "answers": n,
        "held_back": int(test.size),
        "target_error": target_error,
        "install": False,
    }
    if n < min_answers or n - test.size < 2:
        return Step(False, None, {**report, "reason": f"fewer than {min_answers} answers"})
    if current_probs.shape != (test.size, n_cls):
        raise ValueError(f"current_probs must be [{test.size}, {n_cls}], got {current_probs.shape}")
    rest = np.arange(n - test.size)
    X0, y0 = (
        first
        if first is not None
        else (np.zeros((0, examples.features.shape[1])), np.zeros(0, int))
    )
    w = answer_weight if answer_weight is not None else max(1.0, len(y0) / max(1, rest.size))

    def fit(idx: np.ndarray) -> dict[str, Any] | None:
        X = np.concatenate([X0, examples.features[idx]])
        y = np.concatenate([y0, examples.y[idx]])
        if np.unique(y).size < 2:
            return None
        sw = np.r_[np.ones(len(y0)), np.full(idx.size, w)]
        return fit_head(X, y, C=C, n_classes=n_cls, sample_weight=sw)

    # out-of-fold probabilities of the answers before the held-back ones: the calibration set
    probs = np.zeros((rest.size, n_cls), np.float32)
    cams = np.zeros((rest.size, *examples.fmap.shape[2:]), np.float32)
    seen = np.zeros(rest.size, bool)
    for f in _folds(rest.size, min(folds, rest.size)):
        head = fit(np.setdiff1d(rest, f))
        if head is None:
            continue
        logits, cam = apply_head(
            head["weight"], head["bias"], examples.features[f], examples.fmap[f]
        )
        probs[f], cams[f], seen[f] = softmax(logits), cam, True
    calib = rest[seen]
    y_cal, p_cal = examples.y[calib], probs[seen]
    X_cal = cues(
        p_cal,
        cams[seen],
        examples.foreground[calib],
        classes=classes,
        empty_index=empty_index,
        measure=measure,
    )
    right = p_cal.argmax(1) == y_cal
    try:
        fusion: dict[str, Any] | None = fit_fusion(X_cal, right)
    except ValueError as e:  # all right (or all wrong): nothing to calibrate on yet
        fusion, report["fusion_note"] = None, str(e)
    conf = apply_fusion(fusion, X_cal)
    said_empty = np.isin(p_cal.argmax(1), empty_index)
    tag = tag_threshold(
        conf[~said_empty], right[~said_empty], target_error=target_error, min_count=min_count
    )
    thresholds = {**current.thresholds, "tag": tag}
    if len(empty_index):  # "empty" acts on the softmax: non-empty frames set aside stay rare
        thresholds["empty"] = tag_threshold(
            p_cal.max(1)[said_empty],
            np.isin(y_cal, empty_index)[said_empty],
            target_error=target_error if empty_error is None else empty_error,
            min_count=min_count,
        )
    head = fit(rest)
    if head is None:
        return Step(False, None, {**report, "reason": "the answers hold a single class"})
    candidate = Policy(head["weight"], head["bias"], fusion, thresholds)

    # both bundles on the held-back answers, which neither has trained on
    kw = {"classes": classes, "empty_index": empty_index, "measure": measure}
    wk = {"empty_index": empty_index, "target_error": target_error}
    ex = examples.take(test)
    logits, cam = apply_head(head["weight"], head["bias"], ex.features, ex.fmap)
    figures: dict[str, dict[str, Any]] = {}
    for who, p, c, pol in (
        ("candidate", softmax(logits), cam, candidate),
        ("current", current_probs, current_cam, current),
    ):
        d, pred = triage_frames(np.asarray(p), np.asarray(c), ex.foreground, pol, **kw)
        figures[who] = workload(d, pred, ex.y, **wk) | {"accuracy": float((pred == ex.y).mean())}
    new, old = figures["candidate"], figures["current"]
    # and no more animals, people or vehicles set aside than before, or than `max_empty_lost`
    # of the non-empty frames
    allowed = max(old["empty_lost"], math.floor(max_empty_lost * new["non_empty"]))
    better = new["cost"] < old["cost"] and new["empty_lost"] <= allowed
    report |= {
        "calibration": {
            "frames": int(calib.size),
            "accuracy": float(right.mean()),
            "fusion": None if fusion is None else fusion.get("chosen"),
            "tag": tag,
            "empty": thresholds.get("empty"),
        },
        "first_labels": int(len(y0)),
        "answer_weight": w,
        "candidate": new,
        "current": old,
        "install": bool(better),
        "reason": "lower workload on the held-back answers"
        if better
        else "not better on the held-back answers",
    }
    return Step(bool(better), candidate, report)


def held_back(n: int, *, test_share: float = 0.2, min_test: int = 10) -> np.ndarray:
    """The indices of the latest answers a step validates on (the last ones, in time order)."""
    t = min(n, max(min_test, int(math.ceil(test_share * n))))
    return np.arange(n - t, n)


# ---- the bundle on disk ----------------------------------------------------------------------


def write_learned_bundle(src: Bundle, dest: Path, policy: Policy, learned: dict[str, Any]) -> Path:
    """A new bundle folder `dest`: src's model files hard-linked (copied across filesystems),
    the new head in `head.npz`, the manifest with the head, fused confidence and thresholds,
    and `learned` (the step's figures) under validation. Every file fsynced."""
    if policy.weight is None or policy.bias is None:
        raise ValueError("a learned bundle needs a head")
    dest.mkdir(parents=True)
    m, c = src.manifest, src.manifest.classifier
    first = c.train_features.path if c.train_features else TRAIN_FEATURES
    for name in (c.file.path, m.segmenter.file.path, first):
        if (dest / name).exists() or not (src.root / name).is_file():
            continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src.root / name, dest / name)
        except OSError:
            shutil.copy2(src.root / name, dest / name)
            _fsync(dest / name)
    save_head(dest / HEAD_FILE, policy.weight, policy.bias)
    _fsync(dest / HEAD_FILE)
    update: dict[str, Any] = {"head": file_entry(dest, HEAD_FILE)}
    if (dest / first).is_file():  # the first labels go along, named and checksummed
        update["train_features"] = file_entry(dest, first)
    spec = c.model_copy(update=update)
    history = [*m.validation.get("learned_history", []), learned]
    manifest = m.model_copy(
        update={
            "classifier": spec,
            "fusion": policy.fusion,
            "thresholds": dict(policy.thresholds),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "validation": {**m.validation, "learned": learned, "learned_history": history[-20:]},
        }
    )
    Manifest.model_validate(manifest.model_dump())  # the copy is checked as a read would be
    write_manifest(dest, manifest)
    _fsync(dest / "manifest.json")
    fsync_dir(dest)
    load_bundle(dest)  # checksums and format, before anything is swapped
    return dest


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    rc = fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    return rc == 0


def install_bundle(new: Path, target: Path) -> Path | None:
    """Put the bundle folder `new` at `target`, the one there kept as `<target>.prev` (an older
    .prev is removed). Where the system can, the two folders swap in one atomic step, so a
    reader finds the old bundle or the new one, never none; elsewhere two renames. Returns the
    kept folder (None when `target` did not exist)."""
    prev = target.with_name(target.name + ".prev")
    if not target.exists():
        new.rename(target)
        fsync_dir(target.parent)
        return None
    if prev.exists():
        shutil.rmtree(prev)
    if _exchange(new, target):
        new.rename(prev)  # `new` now holds the old bundle
    else:
        target.rename(prev)
        new.rename(target)
    fsync_dir(target.parent)
    return prev


def log_step(out: Path, entry: dict[str, Any]) -> None:
    """Append one JSON line to OUT/learn/log.jsonl, fsynced."""
    path = Path(out) / LEARN_DIR / LOG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry, default=jsonable) + "\n")
        f.flush()
        os.fsync(f.fileno())


def jsonable(x: Any) -> Any:
    """numpy scalars and arrays as plain JSON values (json.dumps' `default`)."""
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"{type(x).__name__} is not JSON serialisable")


def policy_of(bundle: Bundle) -> Policy:
    """The installed bundle's policy (its head read from head.npz, when it has one)."""
    from edge.linear_head import load_head

    m = bundle.manifest
    w = b = None
    if bundle.head_path is not None:
        w, b = load_head(bundle.head_path)
    return Policy(w, b, m.fusion, dict(m.thresholds))


def empty_indices(manifest: Manifest) -> list[int]:
    c = manifest.classifier
    return [i for i, name in enumerate(c.classes) if name in c.empty_classes]


# ---- `edge learn OUT` ---------------------------------------------------------------------------


def _load_cache(path: Path, classifier_sha: str) -> dict[str, dict[str, np.ndarray]]:
    """key -> {features, fmap, foreground} from OUT/learn/features.npz, when made by the same
    classifier graph (its features are the frozen backbone's: any head of it can use them)."""
    if not path.is_file():
        return {}
    with np.load(path, allow_pickle=False) as z:
        if str(z["classifier_sha256"]) != classifier_sha:
            return {}
        return {
            str(k): {
                "features": z["features"][i],
                "fmap": z["fmap"][i],
                "foreground": z["foreground"][i],
            }
            for i, k in enumerate(z["keys"])
        }


def _save_cache(path: Path, cache: dict[str, dict[str, np.ndarray]], classifier_sha: str) -> None:
    keys = sorted(cache)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        keys=np.array(keys),
        classifier_sha256=np.array(classifier_sha),
        features=np.stack([cache[k]["features"] for k in keys]).astype(np.float32),
        fmap=np.stack([cache[k]["fmap"] for k in keys]).astype(np.float16),
        foreground=np.stack([cache[k]["foreground"] for k in keys]).astype(np.float16),
    )
    tmp.replace(path)


def run_learn(
    out: Path,
    bundle_root: Path,
    *,
    target: Path | None = None,
    target_error: float = 0.02,
    every: int = 0,
    threads: int | None = None,
    providers: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Learn from OUT's answers with the bundle at `bundle_root`; install at `target` (default:
    the same folder) when better. `every`: do nothing until that many answers arrived since
    the last step logged (0: always learn). Returns the logged entry."""
    from edge.decode import load_image
    from edge.runtime import Runtime

    out, target = Path(out), Path(target or bundle_root)
    with Journal.open(out) as journal:
        answers = answered(journal)
    last = _last_logged(out)
    entry: dict[str, Any] = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "bundle": str(bundle_root),
        "target": str(target),
    }
    if every and last is not None and len(answers) - int(last.get("answers_total", 0)) < every:
        # checked before the bundle is read and verified: a watcher asks every few seconds
        return entry | {
            "install": False,
            "answers": len(answers),
            "skipped": True,
            "reason": f"fewer than {every} new answers since the last step",
        }
    bundle = load_bundle(bundle_root)
    m = bundle.manifest
    classes, empty = m.classifier.classes, empty_indices(m)
    labelled = [(a, class_index(a.label, classes, m.classifier.empty_classes)) for a in answers]
    usable = [(a, k) for a, k in labelled if k is not None and (out / a.path).is_file()]
    runtime = Runtime.from_bundle(bundle, features=True, threads=threads, providers=providers)
    cache_path = out / LEARN_DIR / CACHE_FILE
    sha = m.classifier.file.sha256
    cache = _load_cache(cache_path, sha)
    missing = [a for a, _ in usable if a.key not in cache]
    for i in range(0, len(missing), runtime.max_batch):
        chunk = missing[i : i + runtime.max_batch]
        o = runtime.run([load_image(out / a.path) for a in chunk])
        assert o.features is not None and o.fmap is not None
        for j, a in enumerate(chunk):
            cache[a.key] = {
                "features": o.features[j],
                "fmap": o.fmap[j],
                "foreground": o.foreground[j],
            }
    if missing:
        _save_cache(cache_path, cache, sha)
    keys = [a.key for a, _ in usable]
    ex = Examples(
        keys,
        np.stack([cache[k]["features"] for k in keys]) if keys else np.zeros((0, 1)),
        np.stack([cache[k]["fmap"] for k in keys]) if keys else np.zeros((0, 1, 1, 1)),
        np.stack([cache[k]["foreground"] for k in keys]) if keys else np.zeros((0, 1, 1, 1)),
        np.array([k for _, k in usable], int),
    )
    test = held_back(len(ex))
    # the installed bundle's own view of the held-back frames, exactly as the watcher runs it
    if len(usable) and test.size:
        o = runtime.run([load_image(out / usable[i][0].path) for i in test])
        cur_probs, cur_cam = o.probs, o.cam
    else:
        cur_probs = np.zeros((0, len(classes)), np.float32)
        cur_cam = np.zeros((0, *m.classifier.cam_size), np.float32)
    first = first_labels(bundle)
    step = learn_step(
        ex,
        classes=classes,
        empty_index=empty,
        current=policy_of(bundle),
        current_probs=cur_probs,
        current_cam=cur_cam,
        first=None if first is None else (first.X, first.y),
        target_error=target_error,
    )
    entry |= step.report | {"answers_total": len(answers), "answers_usable": len(usable)}
    if step.install and step.policy is not None:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        new = target.with_name(f"{target.name}.new-{stamp}-{os.getpid()}")
        learned = {
            k: entry[k]
            for k in (
                "at",
                "answers",
                "held_back",
                "target_error",
                "candidate",
                "current",
                "calibration",
            )
        }
        write_learned_bundle(bundle, new, step.policy, learned)
        prev = install_bundle(new, target)
        entry |= {"installed": str(target), "previous": None if prev is None else str(prev)}
    log_step(out, entry)
    return entry


def _last_logged(out: Path) -> dict[str, Any] | None:
    """The last step that learned (not one skipped for want of answers)."""
    path = Path(out) / LEARN_DIR / LOG_FILE
    if not path.is_file():
        return None
    last = None
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            e = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a power cut
        if not e.get("skipped"):
            last = e
    return last
