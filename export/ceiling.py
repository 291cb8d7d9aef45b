"""How far the frozen backbone can sort camera-trap frames, and what cheaper changes than a
detector would add.

The default head is a linear model on EfficientNet-Lite0's pooled features. Out of source it
sets almost no empty frame aside at the 1 % bar, and a camera's own answers leave most frames
for review. This module measures four cues on the MLWIC CA-01 stream (one fixed camera, 1,300
frames in order), each trained on the camera's first 600 frames (what a learning step would
have from a person's answers) and tested on the 700 after them:

- ``pooled``: the shipped recipe, :func:`edge.linear_head.fit_head` on the pooled features;
- ``tiles``: the pooled features beside their maximum over a 2x2 grid of overlapping tiles
  (each 2/3 of the frame's side, seen at 224 px, so a small animal is seen 1.5 times larger);
- ``finetuned``: the backbone's last five blocks, its head convolution and a linear layer
  trained on the 600 frames (AdamW, mirrored frames), on the first eleven blocks' activations;
- ``nearest``: the label of the most similar earlier frame (cosine of the pooled features),
  with every earlier frame's label known: the best that handing a person's answer on to
  look-alike frames could do.

``pooled`` and ``tiles`` are also measured out of source (trained on every other source,
tested on MLWIC and on Peru), as the default bundle is. For each cue, on the test frames: the
share of true empties set aside when at most 1 % of the animals, people and vehicles are, the
share of frames that could be tagged with at most 2 % of them wrong, and the accuracy over the
four categories. Both thresholds are chosen on the test frames themselves, so both shares are
upper bounds: a watcher must choose its thresholds before it sees the frames.

    python -m export.ceiling --data ../shared/data/camtrap --json docs/ceiling.json
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edge.categories import CATEGORIES
from edge.decode import load_image
from edge.learn import tag_threshold
from edge.linear_head import fit_head
from edge.overmap import softmax
from edge.preprocess import prepare
from export.camtrap_head import Frame, pooled_frames, spec_for
from export.lite0 import EfficientNetLite0, load_imagenet_lite0

EMPTY = CATEGORIES.index("empty")
STREAM = "mlwic_examples"
TRAIN_FRAMES = 600  # the stream's first frames: the answers a learning step would have
FROZEN_BLOCKS = 11  # of Lite0's 16: the fine-tuned part is the last five and the head conv
TILE_GRID = 2
MAX_LOST = 0.01  # empties set aside with at most this share of non-empty frames
MAX_ERROR = 0.02  # frames tagged with at most this share wrong


# ---- what a threshold could reach ----------------------------------------------------------


def empty_recall_at(p_empty: np.ndarray, is_empty: np.ndarray, max_lost: float = MAX_LOST) -> float:
    """The share of empty frames above the best threshold on `p_empty` that sets aside at most
    `max_lost` of the non-empty frames (an empty frame tied with a non-empty one that must stay
    stays too)."""
    p_empty, is_empty = np.asarray(p_empty, float), np.asarray(is_empty, bool)
    others = np.sort(p_empty[~is_empty])[::-1]
    allowed = int(np.floor(max_lost * len(others)))
    if allowed >= len(others):
        return float(is_empty.any())
    bar = others[allowed]  # the highest non-empty score that must stay below the threshold
    return float((p_empty[is_empty] > bar).mean()) if is_empty.any() else 0.0


def coverage_at(confidence: np.ndarray, correct: np.ndarray, max_error: float = MAX_ERROR) -> float:
    """The largest share of frames, the most confident first (ties together), with at most
    `max_error` of them wrong: the frames at or above edge.learn's `tag_threshold`."""
    conf, ok = np.asarray(confidence, float), np.asarray(correct, bool)
    t = tag_threshold(conf, ok, target_error=max_error, min_count=1)
    kept = conf >= t
    # tag_threshold says 1.0 when nothing qualifies, which frames at 1.0 may still not meet
    return float(kept.mean()) if kept.any() and (~ok[kept]).mean() <= max_error else 0.0


def outcome(P: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """The three figures of a cue's probabilities [N,4] on frames of category `y`."""
    pred = P.argmax(1)
    return {
        "empty_recall_at_1pct_lost": empty_recall_at(P[:, EMPTY], y == EMPTY),
        "taggable_at_2pct_error": coverage_at(P.max(1), pred == y),
        "accuracy": float((pred == y).mean()),
        "frames": int(len(y)),
        "empties": int((y == EMPTY).sum()),
    }


# ---- the cues ---------------------------------------------------------------------------------


def tiles(image: np.ndarray, grid: int = TILE_GRID) -> list[np.ndarray]:
    """grid x grid overlapping tiles, each 2 / (grid + 1) of the frame's side, corner to corner."""
    h, w = image.shape[:2]
    th, tw = int(h * 2 / (grid + 1)), int(w * 2 / (grid + 1))
    out = []
    for a in range(grid):
        for b in range(grid):
            y0 = round(a * (h - th) / max(grid - 1, 1))
            x0 = round(b * (w - tw) / max(grid - 1, 1))
            out.append(image[y0 : y0 + th, x0 : x0 + tw])
    return out


def _stem(model: EfficientNetLite0, x: torch.Tensor) -> torch.Tensor:
    f = model.features
    return f._blocks[:FROZEN_BLOCKS](F.relu6(f._bn0(f._conv_stem(x))))


def _top(model: EfficientNetLite0, z: torch.Tensor) -> torch.Tensor:
    f = model.features
    return F.relu6(f._bn1(f._conv_head(f._blocks[FROZEN_BLOCKS:](z)))).mean((2, 3))


def compute_cues(
    model: EfficientNetLite0,
    frames: Sequence[Frame],
    root: Path,
    stream: np.ndarray,
    batch: int = 16,
) -> dict[str, np.ndarray]:
    """Per frame: pooled features, the max over tiles of the tiles' pooled features, and for the
    stream's frames the frozen blocks' activations (float16) the fine-tuning starts from."""
    spec = spec_for("letterbox")
    tile_spec = spec_for("stretch")  # a tile is seen whole, squashed to 224x224
    pooled, tiled, acts = [], [], []
    with torch.no_grad():
        for i in range(0, len(frames), batch):
            images = [load_image(root / f.file) for f in frames[i : i + batch]]
            z = _stem(model, torch.from_numpy(prepare(images, spec)))
            pooled.append(_top(model, z).numpy())
            keep = stream[i : i + batch]
            if keep.any():
                acts.append(z[torch.from_numpy(keep)].numpy().astype(np.float16))
            t = prepare([tile for im in images for tile in tiles(im)], tile_spec)
            feats = _top(model, _stem(model, torch.from_numpy(t))).numpy()
            tiled.append(feats.reshape(len(images), TILE_GRID * TILE_GRID, -1).max(1))
    return {
        "pooled": np.concatenate(pooled),
        "tiles": np.concatenate(tiled),
        "acts": np.concatenate(acts),
    }


def linear_probs(
    X: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray, C: float
) -> np.ndarray:
    """The shipped head recipe fitted on `train`, its probabilities on `test`."""
    head = fit_head(X[train], y[train], C=C)
    return softmax(X[test].astype(np.float64) @ head["weight"].T + head["bias"])


def finetune_probs(
    model: EfficientNetLite0,
    acts: np.ndarray,
    y: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    *,
    epochs: int = 8,
) -> np.ndarray:
    """A copy of `model` with a new linear layer, its last blocks, head conv and that layer
    trained on `train`'s activations (the frozen blocks' output); its softmax on `test`'s."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    net = copy.deepcopy(model)
    net.classifier = nn.Linear(1280, len(CATEGORIES))
    f = net.features
    body = [p for m in (f._blocks[FROZEN_BLOCKS:], f._conv_head, f._bn1) for p in m.parameters()]
    opt = torch.optim.AdamW(
        [{"params": body, "lr": 1e-4}, {"params": net.classifier.parameters(), "lr": 1e-3}],
        weight_decay=1e-4,
    )

    def forward(z: torch.Tensor) -> torch.Tensor:
        return net.classifier(net.dropout(_top(net, z)))

    counts = np.bincount(y[train], minlength=len(CATEGORIES)).clip(1)
    weight = torch.tensor(counts.sum() / counts / len(CATEGORIES), dtype=torch.float32)
    Z = torch.from_numpy(acts.astype(np.float32))
    Y = torch.from_numpy(y).long()
    for _ in range(epochs):
        net.train()  # only the top's batch norms see these batches: the stem is not run
        order = rng.permutation(train)
        for i in range(0, len(order), 32):
            b = torch.from_numpy(order[i : i + 32])
            zb = Z[b].flip(3) if rng.random() < 0.5 else Z[b]  # mirrored: the map flips too
            loss = F.cross_entropy(forward(zb), Y[b], weight=weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        return torch.softmax(forward(Z[torch.from_numpy(test)]), 1).numpy()


def nearest_probs(X: np.ndarray, y: np.ndarray, test: np.ndarray) -> np.ndarray:
    """One-hot of the most similar earlier frame's category, scaled by the similarity (so the
    figures rank frames by how alike they are), the rest spread evenly."""
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    P = np.zeros((len(test), len(CATEGORIES)))
    for row, i in enumerate(test):
        sims = Xn[:i] @ Xn[i]
        j = int(np.argmax(sims))
        s = float(np.clip(sims[j], 0.0, 1.0))
        P[row] = (1.0 - s) / (len(CATEGORIES) - 1)
        P[row, y[j]] = s
    return P


# ---- the report -------------------------------------------------------------------------------


def measure(root: Path, *, C: float = 0.01, epochs: int = 8) -> dict[str, Any]:
    """Every cue's figures within the camera and out of source (the module docstring)."""
    started = time.monotonic()
    frames = pooled_frames(root / "labels.csv")
    y = np.array([CATEGORIES.index(f.category) for f in frames])
    src = np.array([f.source for f in frames])
    stream_mask = src == STREAM
    model = load_imagenet_lite0()
    cues = compute_cues(model, frames, root, stream_mask)
    idx = np.nonzero(stream_mask)[0]  # the stream, in the CSV's (capture) order
    train, test = idx[:TRAIN_FRAMES], idx[TRAIN_FRAMES:]
    pooled, both = cues["pooled"], np.hstack([cues["pooled"], cues["tiles"]])
    within = {
        "pooled": outcome(linear_probs(pooled, y, train, test, C), y[test]),
        "tiles": outcome(linear_probs(both, y, train, test, C), y[test]),
        "finetuned": outcome(
            finetune_probs(
                model,
                cues["acts"],
                y[idx],
                np.arange(TRAIN_FRAMES),
                np.arange(TRAIN_FRAMES, len(idx)),
                epochs=epochs,
            ),
            y[test],
        ),
        "nearest": outcome(
            nearest_probs(pooled[idx], y[idx], np.arange(TRAIN_FRAMES, len(idx))), y[test]
        ),
    }
    out_of_source: dict[str, dict[str, Any]] = {}
    for held in (STREAM, "peru_s90_animl"):
        tr, te = np.nonzero(src != held)[0], np.nonzero(src == held)[0]
        out_of_source[held] = {
            "pooled": outcome(linear_probs(pooled, y, tr, te, C), y[te]),
            "tiles": outcome(linear_probs(both, y, tr, te, C), y[te]),
        }
    return {
        "stream": STREAM,
        "train_frames": TRAIN_FRAMES,
        "test_frames": int(len(test)),
        "C": C,
        "finetune_epochs": epochs,
        "within_camera": within,
        "out_of_source": out_of_source,
        "bars": {"max_lost": MAX_LOST, "max_error": MAX_ERROR},
        "seconds": round(time.monotonic() - started, 1),
    }


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/camtrap"))
    ap.add_argument("--json", type=Path, default=Path("docs/ceiling.json"))
    ap.add_argument("--epochs", type=int, default=8)
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    report = measure(args.data, epochs=args.epochs)
    args.json.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
