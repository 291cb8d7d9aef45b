"""`edge evaluate` and `edge calibrate`: run a bundle on labelled frames, in order, and measure
how well each confidence separates right labels from wrong ones.

Frames are taken in the order the CSV lists them (filtered by `source`), because the camera's
background model learns from what came before. Frames before the scored range only warm the
background model. Confidences compared side by side on the same frames: max softmax, entropy,
MC dropout on the head (a sampling baseline), Over-MAP, and the fused confidence.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.background import CameraBackgrounds
from edge.bundle import Bundle, write_manifest
from edge.decode import load_image
from edge.fusion import FEATURES, apply_fusion, features, fit_fusion
from edge.masks import boxes_from_labels_bbox, mask_from_boxes, mask_from_file
from edge.runtime import Runtime
from edge.scorer import Scorer

CONFIDENCES = ("softmax", "entropy", "mc_dropout", "overmap", "fused")


@dataclass
class Row:
    """One labelled frame of a CSV (edge evaluate, calibrate, audit)."""

    file: Path
    label: str
    camera: str = ""
    mask: Path | None = None
    boxes: list[list[float]] | None = None


def read_rows(
    labels: Path,
    *,
    images_root: Path | None = None,
    source: str | None = None,
    masks_column: str | None = None,
    boxes_column: str | None = None,
    label_column: str = "label",
) -> list[Row]:
    """The CSV's rows (at least `file` and `label_column`), in order, optionally of one
    `source` only."""
    root = images_root or labels.parent
    with open(labels, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"file", label_column} - set(reader.fieldnames or ())
        for col in (masks_column, boxes_column):
            if col and col not in (reader.fieldnames or ()):
                missing.add(col)
        if missing:
            raise ValueError(f"{labels}: missing columns {sorted(missing)}")
        rows = []
        for r in reader:
            if source and r.get("source") != source:
                continue
            file = root / r["file"]
            rows.append(
                Row(
                    file=file,
                    label=r[label_column],
                    camera=r.get("camera_or_sequence") or str(Path(r["file"]).parent),
                    mask=root / r[masks_column] if masks_column and r[masks_column] else None,
                    boxes=boxes_from_labels_bbox(r[boxes_column]) if boxes_column else None,
                )
            )
    if not rows:
        raise ValueError(f"{labels}: no rows" + (f" with source {source!r}" if source else ""))
    return rows


def _given_mask(row: Row, shape: tuple[int, int]) -> np.ndarray | None:
    if row.mask is not None:
        mask, valid = mask_from_file(row.mask, shape=shape)
        return mask * valid  # boundary pixels count as background
    if row.boxes is not None:
        return mask_from_boxes(row.boxes, shape)
    return None


def run_frames(
    rows: Sequence[Row],
    bundle: Bundle,
    *,
    start: int = 0,
    background: bool = True,
    use_given_masks: bool = True,
    mc_samples: int = 30,
    mc_p: float = 0.2,
    batch: int = 16,
    threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    map_source: str | None = None,
) -> dict[str, Any]:
    """Score rows[start:] (rows[:start] only warm the background model); per-frame records.

    `map_source`: the classifier's map Over-MAP is measured on ("cam", "attention"), passed to
    the Scorer; None = the Scorer's default.
    """
    from edge.mcdropout import NoHeadTap, head_tap, mc_dropout_probs

    runtime = Runtime.from_bundle(bundle, threads=threads)
    backgrounds = CameraBackgrounds() if background else None
    extra = {} if map_source is None else {"map_source": map_source}
    scorer = Scorer(runtime, bundle.manifest, backgrounds=backgrounds, **extra)
    classes = bundle.manifest.classifier.classes
    unknown = sorted({r.label for r in rows[start:]} - set(classes))
    try:
        import onnxruntime as ort

        tap = head_tap(bundle.classifier_path)
        tap_session = ort.InferenceSession(tap.model, providers=["CPUExecutionProvider"])
        feature_name = tap_session.get_outputs()[-1].name
    except (NoHeadTap, ImportError) as e:
        tap, tap_session, mc_note = None, None, str(e)
    else:
        mc_note = f"T={mc_samples} dropout masks, p={mc_p}, on the head input"
    if backgrounds is not None:
        for r in rows[:start]:
            backgrounds.update(r.camera, load_image(r.file))
    frames: list[dict[str, Any]] = []
    forward_s = mc_s = 0.0
    todo = rows[start:]
    for i in range(0, len(todo), batch):
        chunk = todo[i : i + batch]
        images = [load_image(r.file) for r in chunk]
        masks = (
            [_given_mask(r, im.shape[:2]) for r, im in zip(chunk, images, strict=True)]
            if use_given_masks
            else None
        )
        t0 = time.perf_counter()
        scored = scorer.score(images, [r.camera for r in chunk], masks=masks)
        forward_s += time.perf_counter() - t0
        mc = None
        if tap_session is not None:
            x = runtime.prepare(images).x_cls
            feats = tap_session.run([feature_name], {"image": x})[0].reshape(len(chunk), -1)
            t0 = time.perf_counter()
            mc = mc_dropout_probs(feats, tap, p=mc_p, samples=mc_samples, seed=i)
            mc_s += time.perf_counter() - t0
        for k, (r, s) in enumerate(zip(chunk, scored, strict=True)):
            frames.append(
                {
                    "file": str(r.file),
                    "camera": r.camera,
                    "label": r.label,
                    "prediction": s.score.label,
                    "correct": s.score.label == r.label,
                    "mask_source": s.score.mask_source,
                    "foreground": s.score.foreground_fraction,
                    "probs": s.probs,
                    "cues": dict(zip(FEATURES, map(float, s.cues), strict=True))
                    if s.cues is not None
                    else None,
                    "confidences": {
                        "softmax": s.score.softmax,
                        "entropy": 1.0 - s.entropy,
                        "mc_dropout": float(mc[k].max()) if mc is not None else None,
                        "overmap": s.score.overmap,
                        "fused": s.fused,
                    },
                }
            )
        if progress:
            progress(len(frames), len(todo))
    n = max(len(frames), 1)
    return {
        "frames": frames,
        "labels_not_in_bundle": unknown,
        "empty_classes": list(bundle.manifest.classifier.empty_classes),
        "map_source": map_source,
        "cost": {
            "forward_ms_per_frame": 1000 * forward_s / n,
            "mc_dropout_extra_ms_per_frame": 1000 * mc_s / n if tap_session else None,
            "mc_dropout": mc_note,
        },
    }


def figures(frames: Sequence[dict[str, Any]], *, budgets: Sequence[float] = (0.1, 0.2)) -> dict:
    """Every figure for every confidence, on the same frames."""
    from edge.metrics import review_capture, summarise

    correct = np.array([f["correct"] for f in frames], bool)
    table: dict[str, dict[str, float]] = {}
    for name in CONFIDENCES:
        values = [f["confidences"][name] for f in frames]
        if any(v is None for v in values):
            continue
        s = np.asarray(values, np.float64)
        row = summarise({name: s}, correct)[name]
        for b in budgets:
            row[f"review_capture_{b:g}"] = review_capture(s, correct, b)
        table[name] = row
    return {
        "n": len(frames),
        "accuracy": float(correct.mean()) if len(frames) else 0.0,
        "errors": int((~correct).sum()),
        "confidences": table,
    }


def overlap_curves(
    frames: Sequence[dict[str, Any]], empty_classes: Sequence[str] = (), *, bins: int = 10
) -> dict[str, dict[str, Any]]:
    """The overlap-accuracy curve (accuracy per Over-MAP decile, edge.metrics.overlap_accuracy)
    and its trend, for all frames and for animal predictions only (a prediction that is not one
    of `empty_classes`: an "empty" label's map has no animal to land on, and its Over-MAP says
    nothing about the animal). Returns {"overlap_accuracy": {"all": bins, "animal": bins},
    "overlap_trend": {"all": trend, "animal": trend}}."""
    from edge.metrics import overlap_accuracy, overlap_trend

    empty = set(empty_classes)
    subsets = {"all": list(frames), "animal": [f for f in frames if f["prediction"] not in empty]}
    curves, trends = {}, {}
    for name, sub in subsets.items():
        s = np.array([f["confidences"]["overmap"] for f in sub], np.float64)
        curves[name] = overlap_accuracy(s, np.array([f["correct"] for f in sub], bool), bins=bins)
        trends[name] = overlap_trend(curves[name])
    return {"overlap_accuracy": curves, "overlap_trend": trends}


def side_by_side(reports: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One report for several maps of the same frames (`edge evaluate --map both`): the first
    map's report at the top (its frames and figures, so the tables read it as before), the
    curves keyed by map name (`overlap_accuracy: {"cam": {"all": ..., "animal": ...}, ...}`,
    likewise `overlap_trend`), and each map's own report under `by_map` (frames, figures,
    curves), from which every figure can be recomputed."""
    first = next(iter(reports.values()))
    return {
        **first,
        "map_source": "both",
        "maps": list(reports),
        "overlap_accuracy": {m: r["overlap_accuracy"] for m, r in reports.items()},
        "overlap_trend": {m: r["overlap_trend"] for m, r in reports.items()},
        "by_map": reports,
    }


def plots(
    frames: Sequence[dict[str, Any]], folder: Path, *, empty_classes: Sequence[str] = ()
) -> list[Path]:
    """A risk-coverage plot of every confidence, reliability diagrams of the fused confidence and
    softmax, and the overlap-accuracy curves (all frames, animal predictions)."""
    from edge.metrics import plot_overlap_accuracy, plot_reliability, plot_risk_coverage

    folder.mkdir(parents=True, exist_ok=True)
    correct = np.array([f["correct"] for f in frames], bool)
    conf = {
        n: np.array([f["confidences"][n] for f in frames], float)
        for n in CONFIDENCES
        if all(f["confidences"][n] is not None for f in frames)
    }
    out = [plot_risk_coverage(conf, correct, folder / "risk_coverage.png")]
    for name in ("fused", "softmax"):
        out.append(
            plot_reliability(
                conf[name],
                correct,
                folder / f"reliability_{name}.png",
                title=f"reliability: {name}",
            )
        )
    curves = overlap_curves(frames, empty_classes)["overlap_accuracy"]
    out.append(plot_overlap_accuracy(curves, folder / "overlap_accuracy.png"))
    return out


def write_json(path: Path, report: dict[str, Any]) -> Path:
    """The figures plus, per frame, file, label, prediction and every confidence."""

    def clean(f: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in f.items() if k != "probs"}

    data = {**report, "frames": [clean(f) for f in report["frames"]]}
    if "by_map" in report:  # --map both: each map's report holds its own frames
        data["by_map"] = {
            m: {**r, "frames": [clean(f) for f in r["frames"]]} for m, r in report["by_map"].items()
        }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=float) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def calibrate(
    frames: Sequence[dict[str, Any]], bundle: Bundle, *, method: str = "logistic"
) -> dict[str, Any]:
    """Fit the fused confidence on labelled frames and store it in the bundle's manifest."""
    m = bundle.manifest
    empties = [i for i, c in enumerate(m.classifier.classes) if c in m.classifier.empty_classes]
    X = features(
        np.stack([f["probs"] for f in frames]),
        [f["confidences"]["overmap"] for f in frames],
        [f["foreground"] for f in frames],
        empty_index=empties or None,
    )
    params = fit_fusion(X, [f["correct"] for f in frames], method=method)
    updated = m.model_copy(update={"fusion": params})
    write_manifest(bundle.root, updated)
    bundle.manifest = updated
    return params


TABLE_COLUMNS = (
    "auroc",
    "aurc",
    "eaurc",
    "fpr_at_0.95",
    "ece",
    "review_capture_0.1",
    "review_capture_0.2",
)


def markdown_overlap(report: dict[str, Any]) -> str:
    """The overlap-accuracy curves of one `edge evaluate --json` report as Markdown: per map (one,
    or each of `--map both`) and subset (all frames, animal predictions) a row per decile with
    its Over-MAP range, count, accuracy and Wilson interval, then the trend. "" if absent."""
    curves, trends = report.get("overlap_accuracy"), report.get("overlap_trend") or {}
    if not curves:
        return ""
    if "all" in curves:  # one map
        name = report.get("map_source") or "cam"
        curves, trends = {name: curves}, {name: trends}
    lines = []
    for m, by_subset in curves.items():
        for subset, bins in by_subset.items():
            t = trends.get(m, {}).get(subset)
            n = sum(b["count"] for b in bins)
            lines += [
                f"map {m}, {subset} predictions ({n} frames)",
                "",
                "| bin | Over-MAP | frames | right | accuracy | 95 % interval |",
                "|---|---|---|---|---|---|",
            ]
            for b in bins:
                acc = f"{b['accuracy']:.3f}" if b["count"] else "-"
                ci = f"{b['low']:.3f}-{b['high']:.3f}" if b["count"] else "-"
                lines.append(
                    f"| {b['bin'] + 1} | {b['lower']:.3f}-{b['upper']:.3f} | {b['count']} | "
                    f"{b['correct']} | {acc} | {ci} |"
                )
            if t:
                lines.append(
                    f"\nSpearman (bin centre vs accuracy, {t['bins']} bins) {t['spearman']:.2f}; "
                    f"top minus bottom bin {t['top_minus_bottom']:+.3f} "
                    f"(95 % interval {t['low']:+.3f} to {t['high']:+.3f})"
                )
            lines.append("")
    return "\n".join(lines).rstrip()


def markdown_table(report: dict[str, Any]) -> str:
    """The figures of one `edge evaluate --json` report as a Markdown table (docs/evidence.md)."""
    fig = report.get("figures") or figures(report["frames"])
    head = ["confidence", *(c.replace("review_capture_", "caught@") for c in TABLE_COLUMNS)]
    lines = [
        f"{fig['n']} frames, accuracy {fig['accuracy']:.1%}, {fig['errors']} errors",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for name, row in fig["confidences"].items():
        lines.append(f"| {name} | " + " | ".join(f"{row[c]:.3f}" for c in TABLE_COLUMNS) + " |")
    return "\n".join(lines)


ABLATIONS: dict[str, tuple[str, ...]] = {
    # what the classifier alone knows, incl. the per-class prior "it said empty"
    "softmax cues": ("max_softmax", "margin", "entropy", "pred_empty"),
    # plus how much of the frame is animal, and the empty/animal conflicts (no map)
    "+ foreground": (
        "max_softmax",
        "margin",
        "entropy",
        "pred_empty",
        "foreground",
        "conflict_empty",
        "conflict_animal",
        "foreground_empty",
    ),
    # plus the map's overlap with the mask: what Over-MAP adds on top of all the rest
    "+ Over-MAP (all cues)": FEATURES,
    "Over-MAP cues + softmax": (
        "max_softmax",
        "overmap",
        "overmap_lift",
        "overmap_animal",
        "overmap_x_softmax",
    ),
}


def _cue_table(report: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    frames = report["frames"]
    if any(f.get("cues") is None for f in frames):
        raise ValueError("the report has no per-frame cues (written by an older edge evaluate)")
    X = np.array([[f["cues"][n] for n in FEATURES] for f in frames], np.float64)
    return X, np.array([f["correct"] for f in frames], bool)


def ablation(
    calibration: dict[str, Any], test: dict[str, Any], sets: dict[str, Sequence[str]] | None = None
) -> dict[str, Any]:
    """Which cues earn their keep: fit the fusion on `calibration`'s frames with each cue set
    (no guard, so every set is really used), apply it to `test`'s frames, and report the test
    figures beside max softmax. Both are `edge evaluate --json` reports of the same bundle."""
    from edge.metrics import review_capture, summarise

    Xc, yc = _cue_table(calibration)
    Xt, yt = _cue_table(test)
    scores = {"softmax": Xt[:, FEATURES.index("max_softmax")]}
    for name, use in (sets or ABLATIONS).items():
        params = fit_fusion(Xc, yc, use=list(use), guard=False)
        scores[name] = apply_fusion(params, Xt)
    table = summarise(scores, yt)
    for name, s in scores.items():
        for b in (0.1, 0.2):
            table[name][f"review_capture_{b:g}"] = review_capture(s, yt, b)
    return {
        "n": int(yt.size),
        "accuracy": float(yt.mean()),
        "errors": int((~yt).sum()),
        "confidences": table,
    }


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m edge.evaluate tables A.json [B.json ...]`: Markdown tables of saved reports;
    `python -m edge.evaluate ablate CAL.json TEST.json`: the cue-set ablation, as Markdown."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    usage = (
        "usage: python -m edge.evaluate tables REPORT.json [...] | "
        "python -m edge.evaluate ablate CALIBRATION.json TEST.json"
    )
    if len(args) == 3 and args[0] == "ablate":
        cal, test = (json.loads(Path(p).read_text(encoding="utf-8")) for p in args[1:])
        print(
            f"### cue ablation: fitted on {args[1]}, tested on {args[2]}\n\n"
            + markdown_table({"figures": ablation(cal, test)})
            + "\n"
        )
        return
    if not args or args[0] != "tables" or len(args) < 2:
        raise SystemExit(usage)
    for p in args[1:]:
        report = json.loads(Path(p).read_text(encoding="utf-8"))
        print(f"### {p}\n\n{markdown_table(report)}\n")
        if curves := markdown_overlap(report):
            print(f"overlap-accuracy curve:\n\n{curves}\n")


if __name__ == "__main__":
    main()
