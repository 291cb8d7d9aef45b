"""Build the default bundle the device ships with, and the figures that justify it.

    python -m export.default_bundle --out edge/default_bundle --report docs/default_bundle.json

Steps, each measured on cameras the head has never seen (leave one source out):
1. cues of every pooled labelled frame of ../shared/data/camtrap, for each resize mode;
2. per mode, out-of-source probabilities of the empty/animal/person/vehicle head;
3. the "empty" threshold: the lowest P(empty) at which no held-out source loses 1 % or more of
   its animals, people and vehicles to "empty" (the worst camera decides);
4. the resize mode: the one that sets aside the most true empties at its safe threshold;
5. the "tag" threshold: the lowest confidence at which at most `target_error` of the frames
   tagged out-of-source carry a wrong category;
6. the head trained on every frame with that mode, the ImageNet classifier kept beside it as
   the species guess, exported INT8 with the project's segmenter (one backbone pass).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge.categories import CATEGORIES
from edge.learn import add_first_labels
from export.camtrap_head import (
    EMPTY,
    cached_cues,
    fit_head,
    leave_one_source_out,
    per_source_report,
    pooled_frames,
    safest_threshold,
    spec_for,
)

HERE = Path(__file__).resolve().parent.parent
DATA = HERE.parent / "shared" / "data" / "camtrap"
DEFAULT_OUT = HERE / "edge" / "default_bundle"
# ImageNet's classes 0..397 are animals (tench to puffer, in WordNet order); the guess
# is only shown for frames the head calls "animal", so it names an animal, not a snowplow
IMAGENET_ANIMALS = 398
CS = (0.01, 0.03, 0.1)  # L2 strengths measured; each fold uses the same one, untuned on it


def tag_threshold(P: np.ndarray, y: np.ndarray, *, target_error: float = 0.02) -> float:
    """The lowest max-probability at which frames predicted non-empty and tagged carry a wrong
    category at most `target_error` of the time (out-of-source probabilities)."""
    pred, conf = P.argmax(1), P.max(1)
    animalish = pred != EMPTY
    for t in np.round(np.arange(0.5, 0.9995, 0.005), 4):
        tagged = animalish & (conf >= t)
        if tagged.sum() and (pred[tagged] != y[tagged]).mean() <= target_error:
            return float(t)
    return 1.0


def measure(
    frames: list,
    cues: dict[str, dict[str, np.ndarray]],
    *,
    target_error: float = 0.02,
    Cs: tuple[float, ...] = CS,
) -> dict[str, Any]:
    """Leave-one-source-out figures for every resize mode and L2 strength, and the pair chosen:
    the one that sets aside the most true empties at its safe threshold. "center_crop" is
    measured for the record but never chosen: it cuts a third of a 4:3 frame away, and an
    animal at the edge is then never seen."""
    y = np.array([CATEGORIES.index(f.category) for f in frames])
    sources = [f.source for f in frames]
    runs = {}
    for mode, c in cues.items():
        for C in Cs:
            P = leave_one_source_out(c["features"], y, sources, C=C)
            t_empty = safest_threshold(P, y, sources)
            per = per_source_report(P, y, sources, t_empty=t_empty)
            runs[f"{mode} C={C}"] = {
                "resize": mode,
                "C": C,
                "t_empty": t_empty,
                "t_tag": tag_threshold(P, y, target_error=target_error),
                "accuracy": float((P.argmax(1) == y).mean()),
                "empties_set_aside": sum(r["empties_set_aside"] for r in per.values()),
                "empties": int((y == EMPTY).sum()),
                "non_empty_lost": sum(r["non_empty_lost"] for r in per.values()),
                "per_source": per,
            }
    eligible = [k for k, r in runs.items() if r["resize"] != "center_crop"]
    best = max(
        eligible,
        key=lambda k: (
            runs[k]["empties_set_aside"],
            -runs[k]["non_empty_lost"],
            runs[k]["accuracy"],
        ),
    )
    return {
        "runs": runs,
        "chosen": best,
        "target_error": target_error,
        "frames": len(frames),
        "categories": dict(Counter(f.category for f in frames)),
        "sources": dict(Counter(sources)),
    }


def save_default_checkpoint(
    path: Path, X: np.ndarray, y: np.ndarray, resize: str, C: float
) -> Path:
    """The head fitted on every frame, with the ImageNet classifier as the guess head."""
    from export.lite0 import load_imagenet_lite0
    from export.models import imagenet_classes, save_checkpoint
    from export.train_head import with_head

    head = fit_head(X, y, C=C)
    base = load_imagenet_lite0()
    model = with_head(base, head["weight"], head["bias"])
    return save_checkpoint(
        path,
        arch="efficientnet_lite0",
        state_dict=model.state_dict(),
        classes=list(CATEGORIES),
        input=spec_for(resize),
        empty_classes=["empty"],
        human_classes=["person"],
        guess=(
            base.classifier.weight[:IMAGENET_ANIMALS],
            base.classifier.bias[:IMAGENET_ANIMALS],
            imagenet_classes()[:IMAGENET_ANIMALS],
        ),
    )


def _val_folder(frames: list, root: Path, where: Path, n: int = 256) -> Path:
    """A folder of links to `n` frames spread over every source, to validate INT8 on."""
    where.mkdir(parents=True, exist_ok=True)
    for i in np.linspace(0, len(frames) - 1, n).astype(int):
        link = where / f"{i:05d}{Path(frames[i].file).suffix.lower()}"
        if not link.exists():
            os.symlink(root / frames[i].file, link)
    return where


def build(
    out: Path, report_path: Path | None, *, data: Path = DATA, cache: Path | None = None
) -> dict[str, Any]:
    from export.pipeline import ExportOptions, run_export

    frames = pooled_frames(data / "labels.csv")
    cache = cache or Path(tempfile.gettempdir()) / "overmap-camtrap-cues.npz"
    cues = cached_cues(frames, data, cache)
    report = measure(frames, cues)
    chosen = report["runs"][report["chosen"]]
    mode = chosen["resize"]
    print(
        json.dumps(
            {
                k: {a: b for a, b in r.items() if a != "per_source"}
                for k, r in report["runs"].items()
            },
            indent=1,
        )
    )
    print(f"chosen: {report['chosen']}, empty threshold {chosen['t_empty']}, tag {chosen['t_tag']}")
    y = np.array([CATEGORIES.index(f.category) for f in frames])
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = save_default_checkpoint(
            Path(tmp) / "camtrap.pt", cues[mode]["features"], y, mode, chosen["C"]
        )
        val = _val_folder(frames, data, Path(tmp) / "val")
        opts = ExportOptions(
            target="cpu",
            out=out,
            classifier=str(ckpt),
            val=val,
            calib=None,
            extra_thresholds={
                "tag": chosen["t_tag"],
                "empty": chosen["t_empty"],
                "empty_foreground": 1.0,
            },
        )
        torch.manual_seed(0)
        run_export(opts)
    # "the first labels": what `edge learn` trains a camera's head on beside its answers
    add_first_labels(
        out,
        cues[mode]["features"],
        [f.category for f in frames],
        files=[f.file for f in frames],
        sources=[f.source for f in frames],
    )
    _add_to_manifest(
        out,
        {
            "camtrap_loso": _summary(report),
            "val_dir": f"256 frames spread over {data.name} (every source)",
        },
    )
    if report_path is not None:
        report_path.write_text(json.dumps(report, indent=1) + "\n")
    return report


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    m = report["runs"][report["chosen"]]
    return {
        "resize": m["resize"],
        "C": m["C"],
        "t_empty": m["t_empty"],
        "t_tag": m["t_tag"],
        "frames": report["frames"],
        "per_source": m["per_source"],
        "runs": {
            k: {
                "empties_set_aside": v["empties_set_aside"],
                "empties": v["empties"],
                "non_empty_lost": v["non_empty_lost"],
                "t_empty": v["t_empty"],
                "accuracy": round(v["accuracy"], 4),
            }
            for k, v in report["runs"].items()
        },
    }


def _add_to_manifest(out: Path, validation: dict[str, Any]) -> None:
    """Add figures to the bundle's validation block, checksums untouched (the manifest is not
    among the files it lists)."""
    from edge.bundle import load_bundle, write_manifest

    b = load_bundle(out)
    m = b.manifest.model_copy(update={"validation": {**b.manifest.validation, **validation}})
    write_manifest(out, m)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--report", type=Path, default=None)
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--cache", type=Path, default=None)
    p.add_argument("--measure-only", action="store_true")
    a = p.parse_args()
    if a.measure_only:
        frames = pooled_frames(a.data / "labels.csv")
        cache = a.cache or Path(tempfile.gettempdir()) / "overmap-camtrap-cues.npz"
        report = measure(frames, cached_cues(frames, a.data, cache))
        print(json.dumps(_summary(report), indent=1))
        return
    build(a.out, a.report, data=a.data, cache=a.cache)


if __name__ == "__main__":
    main()
