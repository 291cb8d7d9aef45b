"""`edge train`: a camera-specific classifier from a few hundred labelled frames of one camera.

The ImageNet EfficientNet-Lite0 stays frozen; only a new linear head is fitted on its pooled
1280-d features. Frames go in whole (``resize="stretch"``): camera-trap animals are often at the
edge of the frame, where a centre crop would cut them off. The features of every frame are
computed once and kept in memory, so choosing the L2 strength by cross-validation costs
seconds, not forward passes.

The head is a multinomial logistic regression (scikit-learn, lbfgs) on standardised features,
with balanced class weights (a camera sees far more empties and elk than foxes). The
standardisation is folded into the weights, so the result is a plain ``Linear(1280, C)`` that
replaces Lite0's ImageNet classifier; the checkpoint loads with ``export.models.build_classifier``
and exports like any other classifier.

Rare classes: a label with fewer than ``min_count`` frames is merged into ``"other"`` (with a
warning). A class the head saw three times is a guess; ``"other"`` says "an animal, not one of
the common ones", which a person should review. If ``"other"`` itself stays under
``min_count``, its frames are dropped (with a warning).

Cross-validation folds are stratified but not shuffled: frames of one camera come in bursts,
and shuffled folds would put near-identical neighbours on both sides, flattering the figure.

`head="attention"`: an attention-pooling head (export.attention) in place of the linear one,
trained in torch on the backbone's last feature map A [N,1280,7,7], extracted once for all
frames (float16 in memory) like the pooled features. AdamW with weight decay, balanced class
weights, early stopping on the held-out loss of one unshuffled stratified fold (the first of
`folds`); the figures report its accuracy there, and the head kept is the one of the best
epoch (trained on the other folds). Its class map and attention map need no gradient.

No augmentation by default. ``flip=True`` adds the mirrored frame of each training frame (one
more forward pass each); nothing else (crops, colour jitter) is done, since the features are
computed once.
"""

from __future__ import annotations

import csv
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge.bundle import InputSpec
from edge.decode import load_image
from edge.preprocess import prepare
from export.lite0 import MEAN, STD, EfficientNetLite0, load_imagenet_lite0

ARCH = "efficientnet_lite0"
STRETCH_INPUT = InputSpec(size=(224, 224), mean=MEAN, std=STD, resize="stretch")
OTHER = "other"
EMPTY_NAMES = ("empty",)
HUMAN_NAMES = ("human", "person")
DEFAULT_CS = (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 1.0)

Row = dict[str, str]


# ---- the labels ---------------------------------------------------------------------------


def read_labels(
    labels_csv: Path,
    *,
    source: str | None = None,
    first: int | None = None,
    last: int | None = None,
    select: Callable[[Row], bool] | None = None,
) -> list[Row]:
    """Rows of a labels CSV (at least `file` and `label` columns), in file order.

    A CSV with `class_name` and no `label` (the Oxford-IIIT Pet folders' labels.csv) has its
    class names taken as labels.

    source: keep rows whose `source` column equals it. first/last: then keep rows
    ``[first:last)`` of what is left (Python slice: last excluded), so ``--rows 0:900`` is the
    first 900 frames. select: a last filter on each row (a dict of the CSV's columns).
    """
    with Path(labels_csv).open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"file", "label"} - set(reader.fieldnames or [])
        rows = list(reader)
    if "label" in missing and "class_name" in (reader.fieldnames or []):
        missing.discard("label")
        rows = [{**r, "label": r["class_name"]} for r in rows]
    if missing:
        raise ValueError(f"{labels_csv}: needs the columns file,label; lacks {sorted(missing)}")
    if source is not None:
        if rows and "source" not in rows[0]:
            raise ValueError(f"{labels_csv}: no `source` column to filter on")
        rows = [r for r in rows if r["source"] == source]
    rows = rows[first:last]
    if select is not None:
        rows = [r for r in rows if select(r)]
    if not rows:
        raise ValueError(
            f"{labels_csv}: no rows left after filtering (source={source!r}, rows {first}:{last})"
        )
    return rows


def parse_rows(spec: str | None) -> tuple[int | None, int | None]:
    """ "0:900" -> (0, 900); "900:" -> (900, None); None -> (None, None)."""
    if spec is None:
        return None, None
    head, sep, tail = spec.partition(":")
    if not sep:
        raise ValueError(f"--rows {spec!r}: expected FIRST:LAST, e.g. 0:900")
    try:
        return (int(head) if head.strip() else None), (int(tail) if tail.strip() else None)
    except ValueError as err:
        raise ValueError(f"--rows {spec!r}: FIRST and LAST must be integers") from err


def merge_rare(labels: Sequence[str], min_count: int = 3) -> tuple[list[str | None], list[str]]:
    """Labels with rare classes merged into "other"; None where a frame is dropped.

    Returns (new labels, the names merged). See the module docstring for why.
    """
    counts = Counter(labels)
    rare = sorted(c for c, n in counts.items() if n < min_count and c != OTHER)
    out: list[str | None] = [OTHER if lab in rare else lab for lab in labels]
    if rare:
        warnings.warn(
            f"classes with fewer than {min_count} frames merged into {OTHER!r}: "
            f"{', '.join(f'{c} ({counts[c]})' for c in rare)}",
            stacklevel=2,
        )
    n_other = sum(lab == OTHER for lab in out)
    if 0 < n_other < min_count:
        warnings.warn(f"{OTHER!r} has only {n_other} frames: dropped", stacklevel=2)
        out = [None if lab == OTHER else lab for lab in out]
    return out, rare


# ---- features -----------------------------------------------------------------------------


def _feature_maps(
    model: EfficientNetLite0,
    paths: Sequence[Path],
    *,
    spec: InputSpec,
    batch_size: int,
    flip: bool,
    progress: bool,
    what: str,
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Lite0's last feature map A of each batch of frames, and of the mirrored frames (flip)."""
    model = model.eval()
    batches = range(0, len(paths), batch_size)
    if progress:
        from rich.progress import track

        batches = track(
            batches,
            description=f"{what} of {len(paths)} frames",
            total=len(batches),
            transient=True,
        )
    with torch.no_grad():
        for i in batches:
            x = torch.from_numpy(prepare([load_image(p) for p in paths[i : i + batch_size]], spec))
            yield model.features(x), model.features(x.flip(-1)) if flip else None


def extract_features(
    model: EfficientNetLite0,
    paths: Sequence[Path],
    *,
    spec: InputSpec = STRETCH_INPUT,
    batch_size: int = 32,
    flip: bool = False,
    progress: bool = True,
) -> np.ndarray:
    """Pooled Lite0 features [N,1280] float32 (with flip: [2N,1280], mirrored frames last)."""
    out, out_flip = [], []
    for a, af in _feature_maps(
        model,
        paths,
        spec=spec,
        batch_size=batch_size,
        flip=flip,
        progress=progress,
        what="features",
    ):
        out.append(model.avgpool(a).flatten(1).numpy())
        if af is not None:
            out_flip.append(model.avgpool(af).flatten(1).numpy())
    return np.concatenate(out + out_flip).astype(np.float32)


def extract_maps(
    model: EfficientNetLite0,
    paths: Sequence[Path],
    *,
    spec: InputSpec = STRETCH_INPUT,
    batch_size: int = 32,
    flip: bool = False,
    progress: bool = True,
) -> np.ndarray:
    """Lite0's last feature map A [N,1280,h,w] as float16 (with flip: [2N,...], mirrored last).

    float16 halves the cache (a 7x7 map of 1280 channels is 125 KB a frame); the values are
    ReLU6 outputs in 0..6, where float16 keeps three significant digits."""
    out, out_flip = [], []
    for a, af in _feature_maps(
        model, paths, spec=spec, batch_size=batch_size, flip=flip, progress=progress, what="maps"
    ):
        out.append(a.numpy().astype(np.float16))
        if af is not None:
            out_flip.append(af.numpy().astype(np.float16))
    return np.concatenate(out + out_flip)


def holdout_split(
    y: np.ndarray, folds: int, groups: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray] | None:
    """(train, held-out) indices: the first fold of an unshuffled stratified split (grouped
    when `groups`, so a frame and its mirror stay together); None when a class is too rare."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    n_splits = int(min(folds, np.bincount(y).min()))
    if n_splits < 2:
        return None
    if groups is None:
        split = StratifiedKFold(n_splits).split(np.zeros(len(y)), y)
    else:
        split = StratifiedGroupKFold(n_splits).split(np.zeros(len(y)), y, groups)
    tr, te = next(iter(split))
    return tr, te


def fit_attention_head(
    A: np.ndarray,
    y: np.ndarray,
    *,
    maps: int = 4,
    folds: int = 5,
    groups: np.ndarray | None = None,
    epochs: int = 100,
    patience: int = 10,
    lr: float = 3e-4,
    weight_decay: float = 1e-2,
    dropout: float = 0.5,
    batch_size: int = 64,
    seed: int = 0,
) -> tuple[Any, dict[str, Any]]:
    """Train an AttentionHead on cached maps A [N,K,h,w] (any float dtype), y [N] in 0..C-1.

    Early stopping on the held-out fold's loss (see :func:`holdout_split`); without one (a
    class under two frames) it trains `epochs` epochs on everything. lr and dropout (on the
    pooled [M*K] vector) were chosen on MLWIC rows 0:600 and pets37 trainval: at lr 1e-3 the
    held-out loss is lowest after one epoch on MLWIC (42 % held-out accuracy against 81 %).
    Returns (head in eval mode, figures: train_accuracy, heldout_accuracy,
    heldout_balanced_accuracy, best_epoch, epochs_run, heldout_frames, and the settings).
    """
    from sklearn.metrics import balanced_accuracy_score

    from export.attention import AttentionHead

    y = np.asarray(y)
    n_classes = int(y.max()) + 1
    split = holdout_split(y, folds, groups)
    tr, te = split if split is not None else (np.arange(len(y)), np.array([], int))
    if split is None:
        warnings.warn(
            "too few frames per class for a held-out fold; no early stopping", stacklevel=2
        )
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    data = torch.from_numpy(np.ascontiguousarray(A))
    target = torch.from_numpy(y.astype(np.int64))
    counts = np.bincount(y[tr], minlength=n_classes).astype(np.float64)
    weight = torch.tensor(len(tr) / (n_classes * np.maximum(counts, 1)), dtype=torch.float32)
    head = AttentionHead(A.shape[1], n_classes, maps, dropout=dropout)
    nn = torch.nn
    nn.init.normal_(head.attend.weight, std=1e-3)  # near-uniform attention: starts as avg pool
    nn.init.zeros_(head.attend.bias)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss(weight=weight)

    def predict(idx: np.ndarray) -> tuple[torch.Tensor, float]:
        head.eval()
        logits = (
            torch.cat([head(data[idx[i : i + 256]].float()) for i in range(0, len(idx), 256)])
            if len(idx)
            else torch.zeros(0, n_classes)
        )
        loss = float(loss_fn(logits, target[idx])) if len(idx) else float("nan")
        return logits.argmax(1), loss

    best_loss, best_epoch, best_state, stale = float("inf"), 0, None, 0
    epoch = 0
    for epoch in range(1, epochs + 1):
        head.train()
        order = tr[torch.randperm(len(tr), generator=gen).numpy()]
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            opt.zero_grad()
            loss_fn(head(data[idx].float()), target[idx]).backward()
            opt.step()
        if split is None:
            continue
        with torch.no_grad():
            _, held_loss = predict(te)
        if held_loss < best_loss - 1e-6:
            best_loss, best_epoch, stale = held_loss, epoch, 0
            best_state = {k: v.clone() for k, v in head.state_dict().items()}
        else:
            stale += 1
            if stale >= patience:
                break
    if best_state is not None:
        head.load_state_dict(best_state)
    else:
        best_epoch = epoch
    head.dropout.p = 0.0  # eval mode ignores it; the exported head has none
    head.eval()
    with torch.no_grad():
        pred_tr, _ = predict(tr)
        pred_te, held_loss = predict(te)
    y_te = y[te]
    return head, {
        "head": "attention",
        "maps": maps,
        "train_accuracy": float((pred_tr.numpy() == y[tr]).mean()),
        "heldout_accuracy": float((pred_te.numpy() == y_te).mean()) if len(te) else float("nan"),
        "heldout_balanced_accuracy": (
            float(balanced_accuracy_score(y_te, pred_te.numpy())) if len(te) else float("nan")
        ),
        "heldout_loss": held_loss,
        "heldout_frames": int(len(te)),
        "best_epoch": int(best_epoch),
        "epochs_run": int(epoch),
        "lr": lr,
        "weight_decay": weight_decay,
        "dropout": dropout,
    }


def linear_on_split(
    X: np.ndarray,
    y: np.ndarray,
    *,
    folds: int = 5,
    groups: np.ndarray | None = None,
    Cs: Sequence[float] = DEFAULT_CS,
    seed: int = 0,
) -> dict[str, float]:
    """The linear head fitted (C by CV) on the attention head's training folds and scored on
    its held-out fold: the two heads side by side on the same frames."""
    from sklearn.metrics import balanced_accuracy_score

    split = holdout_split(np.asarray(y), folds, groups)
    if split is None:
        return {}
    tr, te = split
    g = None if groups is None else groups[tr]
    fit = fit_linear_head(X[tr], y[tr], Cs=Cs, folds=folds, groups=g, seed=seed)
    pred = (X[te] @ fit["weight"].T + fit["bias"]).argmax(1)
    pred_tr = (X[tr] @ fit["weight"].T + fit["bias"]).argmax(1)
    return {
        "C": fit["C"],
        "train_accuracy": float((pred_tr == y[tr]).mean()),
        "heldout_accuracy": float((pred == y[te]).mean()),
        "heldout_balanced_accuracy": float(balanced_accuracy_score(y[te], pred)),
    }


# ---- the head -----------------------------------------------------------------------------


def fit_linear_head(
    X: np.ndarray,
    y: np.ndarray,
    *,
    Cs: Sequence[float] = DEFAULT_CS,
    folds: int = 5,
    groups: np.ndarray | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Multinomial logistic regression on standardised X, L2 strength picked by CV accuracy.

    X [N,F], y [N] integer classes 0..C-1. groups: rows that must stay in one fold (a frame and
    its mirror). Returns weight [C,F] and bias [C] acting on raw X (standardisation folded in),
    the chosen C, cv_accuracy (mean over folds, per C), cv_balanced_accuracy and
    train_accuracy.
    """
    from threadpoolctl import threadpool_limits

    # One BLAS thread: on a busy machine, threaded BLAS inside lbfgs runs 30x slower, not faster.
    with threadpool_limits(1):
        return _fit_linear_head(X, y, Cs=Cs, folds=folds, groups=groups, seed=seed)


def _fit_linear_head(
    X: np.ndarray,
    y: np.ndarray,
    *,
    Cs: Sequence[float],
    folds: int,
    groups: np.ndarray | None,
    seed: int,
) -> dict[str, Any]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    X = np.asarray(X, np.float64)
    y = np.asarray(y)
    mean, scale = X.mean(0), X.std(0)
    scale[scale < 1e-8] = 1.0
    Z = (X - mean) / scale

    def model(c: float, warm: bool = False) -> Any:
        return LogisticRegression(
            C=c, class_weight="balanced", max_iter=2000, warm_start=warm, random_state=seed
        )

    n_splits = int(min(folds, np.bincount(y).min()))
    scores: dict[float, tuple[float, float]] = {}
    if n_splits >= 2:
        if groups is None:
            splits = StratifiedKFold(n_splits).split(Z, y)
        else:
            splits = StratifiedGroupKFold(n_splits).split(Z, y, groups)
        acc: dict[float, list[float]] = {c: [] for c in Cs}
        bal: dict[float, list[float]] = {c: [] for c in Cs}
        for tr, te in splits:
            m = model(Cs[0], warm=True)  # strong to weak L2, each fit starts from the last
            for c in sorted(Cs):
                pred = m.set_params(C=c).fit(Z[tr], y[tr]).predict(Z[te])
                acc[c].append(float(np.mean(pred == y[te])))
                bal[c].append(float(balanced_accuracy_score(y[te], pred)))
        scores = {c: (float(np.mean(acc[c])), float(np.mean(bal[c]))) for c in Cs}
        best = max(Cs, key=lambda c: (scores[c][0], -c))
    else:
        warnings.warn("too few frames per class to cross-validate; using C=0.1", stacklevel=2)
        best = 0.1
    final = model(best).fit(Z, y)
    coef = final.coef_
    if coef.shape[0] == 1:  # binary: sklearn keeps one row; softmax over [-z/2, z/2] is the same
        coef = np.vstack([-coef / 2, coef / 2])
        inter = np.array([-final.intercept_[0] / 2, final.intercept_[0] / 2])
    else:
        inter = final.intercept_
    weight = coef / scale
    bias = inter - weight @ mean
    return {
        "weight": weight.astype(np.float32),
        "bias": bias.astype(np.float32),
        "C": best,
        "cv_folds": n_splits,
        "cv_accuracy": scores[best][0] if scores else float("nan"),
        "cv_balanced_accuracy": scores[best][1] if scores else float("nan"),
        "cv_scores": {
            str(c): {"accuracy": a, "balanced_accuracy": b} for c, (a, b) in scores.items()
        },
        "train_accuracy": float(np.mean(final.predict(Z) == y)),
    }


def with_head(model: EfficientNetLite0, weight: np.ndarray, bias: np.ndarray) -> EfficientNetLite0:
    """A Lite0 whose classifier is Linear(1280, C) with the given weights (features shared)."""
    new = EfficientNetLite0(num_classes=weight.shape[0])
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("classifier.")}
    state["classifier.weight"] = torch.from_numpy(np.asarray(weight, np.float32))
    state["classifier.bias"] = torch.from_numpy(np.asarray(bias, np.float32))
    new.load_state_dict(state, strict=True)
    return new.eval()


# ---- the whole step -----------------------------------------------------------------------


def train_head(
    labels_csv: Path,
    *,
    out: Path,
    images_root: Path | None = None,
    source: str | None = None,
    first: int | None = None,
    last: int | None = None,
    select: Callable[[Row], bool] | None = None,
    min_count: int = 3,
    Cs: Sequence[float] = DEFAULT_CS,
    folds: int = 5,
    flip: bool = False,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = True,
    base: EfficientNetLite0 | None = None,
    head: str = "linear",
    maps: int = 4,
    epochs: int = 100,
    compare_linear: bool = False,
) -> dict[str, Any]:
    """Fit a camera-specific head on labelled frames and save a project checkpoint at `out`.

    head: "linear" (logistic regression on the pooled features) or "attention" (an
    attention-pooling head with `maps` maps, at most `epochs` epochs; see the module
    docstring). compare_linear: with the attention head, also fit the linear head on the same
    training folds and report it on the same held-out fold (figures["linear"]).

    labels_csv: a CSV with at least `file` (relative to images_root) and `label` columns.
    images_root: where the files are; default the CSV's folder. source/first/last/select: which
    rows, see :func:`read_labels`. min_count: rarer classes go to "other". flip: also train on
    mirrored frames. base: the frozen Lite0 (default the ImageNet one).

    Returns figures: classes, counts (per class, after merging), merged, dropped, C,
    cv_accuracy, cv_balanced_accuracy, train_accuracy, frames, out (the attention head: see
    :func:`fit_attention_head` in place of C and cv_*).

    >>> train_head(Path("labels.csv"), out=Path("model.pt"), source="mlwic_examples", last=900)
    """
    from export.models import save_checkpoint

    torch.manual_seed(seed)
    labels_csv = Path(labels_csv)
    root = Path(images_root) if images_root is not None else labels_csv.parent
    rows = read_labels(labels_csv, source=source, first=first, last=last, select=select)
    merged_labels, merged = merge_rare([r["label"] for r in rows], min_count)
    keep = [i for i, lab in enumerate(merged_labels) if lab is not None]
    dropped = len(rows) - len(keep)
    labels = [merged_labels[i] for i in keep]
    classes = sorted(set(labels))  # type: ignore[type-var]
    if len(classes) < 2:
        raise ValueError(f"need at least two classes with {min_count}+ frames, got {classes}")
    paths = [root / rows[i]["file"] for i in keep]
    absent = [p for p in paths if not p.is_file()]
    if absent:
        raise FileNotFoundError(
            f"{len(absent)} image(s) not found, first {absent[0]} (is --images-root right?)"
        )

    if head not in ("linear", "attention"):
        raise ValueError(f"head {head!r}: must be linear or attention")
    model = base if base is not None else load_imagenet_lite0()
    y = np.array([classes.index(lab) for lab in labels])  # type: ignore[arg-type]
    groups = None
    if flip:
        y = np.concatenate([y, y])
        groups = np.concatenate([np.arange(len(paths))] * 2)
    counts = Counter(labels)
    common = {
        "out": str(out),
        "frames": len(paths),
        "classes": classes,
        "counts": {c: counts[c] for c in classes},
        "merged": merged,
        "dropped": dropped,
        "flip": flip,
    }
    if head == "attention":
        A = extract_maps(model, paths, batch_size=batch_size, flip=flip, progress=progress)
        att, figs = fit_attention_head(
            A, y, maps=maps, folds=folds, groups=groups, epochs=epochs, seed=seed
        )
        if compare_linear:
            pooled = A.mean(axis=(2, 3), dtype=np.float32)
            figs["linear"] = linear_on_split(
                pooled, y, folds=folds, groups=groups, Cs=Cs, seed=seed
            )
        save_checkpoint(
            Path(out),
            arch=ARCH,
            state_dict={f"features.{k}": v for k, v in model.features.state_dict().items()},
            classes=classes,
            input=STRETCH_INPUT,
            empty_classes=[c for c in classes if c in EMPTY_NAMES],
            human_classes=[c for c in classes if c in HUMAN_NAMES],
            head=att,
        )
        return {**common, **figs}
    X = extract_features(model, paths, batch_size=batch_size, flip=flip, progress=progress)
    head_fit = fit_linear_head(X, y, Cs=Cs, folds=folds, groups=groups, seed=seed)
    trained = with_head(model, head_fit["weight"], head_fit["bias"])
    save_checkpoint(
        Path(out),
        arch=ARCH,
        state_dict=trained.state_dict(),
        classes=classes,
        input=STRETCH_INPUT,
        empty_classes=[c for c in classes if c in EMPTY_NAMES],
        human_classes=[c for c in classes if c in HUMAN_NAMES],
    )
    return {
        **common,
        "head": "linear",
        **{
            k: head_fit[k]
            for k in (
                "C",
                "cv_folds",
                "cv_accuracy",
                "cv_balanced_accuracy",
                "cv_scores",
                "train_accuracy",
            )
        },
    }


@torch.no_grad()
def predict_probs(
    checkpoint: Path,
    paths: Sequence[Path],
    *,
    batch_size: int = 32,
    progress: bool = False,
) -> tuple[np.ndarray, list[str]]:
    """Softmax probabilities [N,C] of a checkpoint from train_head on frames, and its classes.

    The checkpoint's own preprocessing is used; a workstation-side check, not the device path.
    """
    from export.models import load_checkpoint

    ckpt = load_checkpoint(Path(checkpoint))
    model = EfficientNetLite0(len(ckpt["classes"]))
    model.load_state_dict(ckpt["state_dict"], strict=True)
    model.eval()
    spec: InputSpec = ckpt["input"]
    out = []
    batches = range(0, len(paths), batch_size)
    if progress:
        from rich.progress import track

        batches = track(batches, description="predicting", transient=True)
    for i in batches:
        x = torch.from_numpy(prepare([load_image(p) for p in paths[i : i + batch_size]], spec))
        out.append(torch.softmax(model(x), 1).numpy())
    return np.concatenate(out), list(ckpt["classes"])


def train_command(
    labels: Path,
    out: Path,
    *,
    images_root: Path | None = None,
    first: int | None = None,
    last: int | None = None,
    source: str | None = None,
    min_count: int = 3,
    flip: bool = False,
    seed: int = 0,
    progress: bool = True,
    head: str = "linear",
    maps: int = 4,
    epochs: int = 100,
    compare_linear: bool = False,
) -> dict[str, Any]:
    """What `edge train LABELS.csv --out model.pt [--images-root D] [--rows A:B] [--source S]
    [--head attention]` runs: trains, saves, prints a short summary with rich, returns the
    figures."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig = train_head(
            Path(labels),
            out=Path(out),
            images_root=images_root,
            source=source,
            first=first,
            last=last,
            min_count=min_count,
            flip=flip,
            seed=seed,
            progress=progress,
            head=head,
            maps=maps,
            epochs=epochs,
            compare_linear=compare_linear,
        )
    for w in caught:
        console.print(f"[yellow]warning:[/] {w.message}")
    table = Table(title=f"{fig['frames']} frames, {len(fig['classes'])} classes")
    table.add_column("class")
    table.add_column("frames", justify="right")
    for c, n in fig["counts"].items():
        table.add_row(c, str(n))
    console.print(table)
    if fig["head"] == "attention":
        console.print(
            f"attention head, {fig['maps']} maps: train accuracy {fig['train_accuracy']:.3f}  "
            f"held-out accuracy {fig['heldout_accuracy']:.3f} (balanced "
            f"{fig['heldout_balanced_accuracy']:.3f}, {fig['heldout_frames']} frames, one "
            f"unshuffled fold; best epoch {fig['best_epoch']} of {fig['epochs_run']})"
        )
        lin = fig.get("linear")
        if lin:
            console.print(
                f"linear head on the same folds (C={lin['C']}): train accuracy "
                f"{lin['train_accuracy']:.3f}  held-out accuracy {lin['heldout_accuracy']:.3f} "
                f"(balanced {lin['heldout_balanced_accuracy']:.3f})"
            )
        console.print(f"saved {out}; export it with `edge export --classifier {out}`")
        return fig
    console.print(
        f"L2: C={fig['C']}  train accuracy {fig['train_accuracy']:.3f}  "
        f"CV accuracy {fig['cv_accuracy']:.3f} (balanced "
        f"{fig['cv_balanced_accuracy']:.3f}, {fig['cv_folds']} folds, unshuffled)"
    )
    console.print(f"saved {out}; export it with `edge export --classifier {out}`")
    return fig
