"""Compare an exported classifier with its PyTorch original on real images.

An export is only as good as its agreement with the model it came from: same top-1 class, and
a map that still points at the same place, since Over-MAP reads the map. The figures returned
here go into the bundle's manifest, so a field user can see what quantization cost.

Both models are fed the same batches, made by `edge.preprocess.prepare` from frames decoded by
`edge.decode.load_image`, exactly as on the device.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.bundle import InputSpec
from edge.decode import load_image
from edge.preprocess import prepare

TOP_SHARE = 0.2  # without masks, the FP32 map's own top 20 % region stands in for the animal


def read_labelled_folder(
    root: str | Path,
) -> tuple[list[Path], list[int] | None, list[str] | None]:
    """Images of a folder and, when it has a labels.csv (file, class_id[, class_name]), labels.

    Returns (paths, labels, class_names); labels and class_names are None without labels.csv.
    class_names[i] is the name of class id i when the csv names every id up to the largest.
    """
    root = Path(root)
    table = root / "labels.csv"
    if not table.exists():
        from export.calibration import list_images

        return list_images(root), None, None
    with open(table, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or "file" not in rows[0] or "class_id" not in rows[0]:
        raise ValueError(f"{table} needs the columns file and class_id")
    paths = [root / r["file"] for r in rows]
    labels = [int(r["class_id"]) for r in rows]
    names: list[str] | None = None
    if "class_name" in rows[0]:
        by_id = {int(r["class_id"]): r["class_name"] for r in rows}
        if set(by_id) == set(range(max(by_id) + 1)):
            names = [by_id[i] for i in range(len(by_id))]
    return paths, labels, names


def map_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation per map between two stacks of maps [N,h,w] -> [N].

    Two flat maps (no variance) count as 1 when equal, else 0.
    """
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    denom = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    flat = denom == 0
    out = np.where(flat, 0.0, (a * b).sum(axis=1) / np.where(flat, 1.0, denom))
    same = np.all(np.isclose(a, b), axis=1)
    return np.where(flat & same, 1.0, out)


def upsample(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Maps [N,h,w] -> [N,H,W] by bilinear resize, clipped at 0 (mass must be non-negative)."""
    h, w = size
    out = np.stack(
        [cv2.resize(m.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR) for m in maps]
    )
    return np.maximum(out, 0)


def overmap(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Share of each map's mass inside its mask: [N,H,W] maps, [N,H,W] masks -> [N] in 0..1.

    A map with no mass scores 0 (it looks nowhere, so not at the animal).
    """
    maps = np.maximum(maps, 0).reshape(len(maps), -1)
    masks = (masks > 0.5).reshape(len(masks), -1)
    total = maps.sum(axis=1)
    inside = (maps * masks).sum(axis=1)
    return np.where(total > 0, inside / np.where(total > 0, total, 1), 0.0)


def top_region(maps: np.ndarray, share: float = TOP_SHARE) -> np.ndarray:
    """Masks of each map's top `share` of pixels (by value): [N,H,W] -> bool [N,H,W]."""
    flat = maps.reshape(len(maps), -1)
    k = max(1, int(round(share * flat.shape[1])))
    thresh = np.partition(flat, -k, axis=1)[:, -k][:, None]
    return (flat >= thresh).reshape(maps.shape)


def _torch_forward(model: Any, x: np.ndarray) -> tuple[np.ndarray, ...]:
    """(logits, cam[, attention]): what the model's forward returns, as float32 arrays."""
    import torch

    with torch.no_grad():
        out = model(torch.from_numpy(x))
    return tuple(o.float().numpy() for o in out)


def validate_classifier(
    torch_model: Any,
    onnx_path: str | Path,
    images: Sequence[str | Path],
    labels: Sequence[int] | None,
    spec: InputSpec,
    *,
    masks_fn: Callable[[list[np.ndarray]], np.ndarray] | None = None,
    batch: int = 32,
    progress: bool = True,
    providers: Sequence[str] = ("CPUExecutionProvider",),
) -> dict[str, Any]:
    """FP32 PyTorch vs an ONNX export on real images; returns JSON-ready figures.

    Args:
        torch_model: a module whose forward returns (logits [N,C], cam [N,h,w][, attention
            [N,h,w]]), or the path of a reference ONNX file with outputs `logits` and `cam`
            (and `attention`) (see below).
        onnx_path: the exported (FP32, FP16 or INT8) classifier.
        images: image files; decoded with `edge.decode.load_image`.
        labels: true class ids, or None; accuracies are reported only with labels.
        spec: how to preprocess (must be the bundle's input spec).
        masks_fn: maps a list of decoded frames to foreground masks [N,H,W] at spec.size
            (after the same resize as the model input); without it, the FP32 map's top 20 %
            region is the mask, which measures whether the maps keep their peak.
        batch: frames per forward pass.
        progress: show a rich progress bar.
        providers: ONNX Runtime execution providers, in order of preference.

    Returns:
        {"n_images", "top1_agreement", "top1_accuracy_fp32", "top1_accuracy_onnx" (None without
        labels), "cam_correlation" (mean Pearson r between maps), "overmap_drift_mean",
        "overmap_drift_max" (|Over-MAP fp32 - Over-MAP onnx|), "overmap_mask"}; when the
        export has an `attention` output (an attention head), also "attention_correlation"
        and "attention_overmap_drift_mean", "attention_overmap_drift_max" (the same figures
        for the attention map).

    `torch_model` may also be a str/Path to an ONNX file: validating an ONNX model against
    itself or against its FP32 export uses the same code path.
    """
    import onnxruntime as ort

    if labels is not None and len(labels) != len(images):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if not images:
        raise ValueError("validation needs at least one image")
    sess = ort.InferenceSession(str(onnx_path), providers=list(providers))
    in_name = sess.get_inputs()[0].name
    names = ["logits", "cam"]
    if "attention" in {o.name for o in sess.get_outputs()}:
        names.append("attention")
    if isinstance(torch_model, str | Path):
        ref_sess = ort.InferenceSession(str(torch_model), providers=list(providers))

        def reference(x: np.ndarray) -> tuple[np.ndarray, ...]:
            return tuple(ref_sess.run(names, {ref_sess.get_inputs()[0].name: x}))
    else:
        torch_model.eval()

        def reference(x: np.ndarray) -> tuple[np.ndarray, ...]:
            return _torch_forward(torch_model, x)

    top_ref, top_onx, corr, om_ref, om_onx = [], [], [], [], []
    att_corr: list[np.ndarray] = []
    att_drift: list[np.ndarray] = []
    bar, task = None, None
    if progress:
        from rich.progress import Progress

        bar = Progress(transient=True)
        bar.start()
        task = bar.add_task("validating", total=len(images))
    try:
        for i in range(0, len(images), batch):
            frames = [load_image(p) for p in images[i : i + batch]]
            x = prepare(frames, spec)
            l_ref, c_ref, *a_ref = reference(x)
            l_onx, c_onx, *a_onx = sess.run(names, {in_name: x})
            top_ref.append(l_ref.argmax(axis=1))
            top_onx.append(l_onx.argmax(axis=1))
            corr.append(map_correlation(c_ref, c_onx))
            up_ref = upsample(c_ref, spec.size)
            up_onx = upsample(c_onx.astype(np.float32), spec.size)
            masks = np.asarray(masks_fn(frames)) if masks_fn else top_region(up_ref)
            om_ref.append(overmap(up_ref, masks))
            om_onx.append(overmap(up_onx, masks))
            if a_ref and a_onx:
                att_corr.append(map_correlation(a_ref[0], a_onx[0]))
                ua_ref = upsample(a_ref[0], spec.size)
                ua_onx = upsample(a_onx[0].astype(np.float32), spec.size)
                att_drift.append(np.abs(overmap(ua_ref, masks) - overmap(ua_onx, masks)))
            if bar is not None:
                bar.advance(task, len(frames))
    finally:
        if bar is not None:
            bar.stop()
    t_ref, t_onx = np.concatenate(top_ref), np.concatenate(top_onx)
    drift = np.abs(np.concatenate(om_ref) - np.concatenate(om_onx))
    y = None if labels is None else np.asarray(labels)
    attention: dict[str, float] = {}
    if att_corr:
        a_drift = np.concatenate(att_drift)
        attention = {
            "attention_correlation": float(np.concatenate(att_corr).mean()),
            "attention_overmap_drift_mean": float(a_drift.mean()),
            "attention_overmap_drift_max": float(a_drift.max()),
        }
    return {
        "n_images": int(len(t_ref)),
        "top1_agreement": float((t_ref == t_onx).mean()),
        "top1_accuracy_fp32": None if y is None else float((t_ref == y).mean()),
        "top1_accuracy_onnx": None if y is None else float((t_onx == y).mean()),
        "cam_correlation": float(np.concatenate(corr).mean()),
        "overmap_drift_mean": float(drift.mean()),
        "overmap_drift_max": float(drift.max()),
        "overmap_mask": "masks_fn" if masks_fn else f"fp32 map top {TOP_SHARE:.0%}",
        **attention,
    }
