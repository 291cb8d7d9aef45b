"""`edge export`: a PyTorch classifier and segmenter -> a verified, quantized bundle.

The steps, in order: build both models (registry by name or checkpoint) -> ONNX FP32 (the
classifier with its `cam` output) -> INT8 (cpu) or FP16 (cuda, jetson; `--int8` for TensorRT)
-> validate against the FP32 PyTorch original on real images -> manifest with checksums. The
bundle is written into a hidden sibling folder and renamed into place only when everything has
passed, so a failed or interrupted export never leaves a half bundle behind under `out`.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata as md
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from rich.console import Console

from edge.bundle import (
    FORMAT_VERSION,
    ClassifierSpec,
    InputSpec,
    Manifest,
    SegmenterSpec,
    file_entry,
    write_manifest,
)
from edge.providers import CPU, target_providers
from edge.thresholds import Thresholds

log = logging.getLogger("export")


class ExportRefused(Exception):
    """The export ran but its validation fell under the bar; nothing was written to `out`."""


@dataclass
class ExportOptions:
    target: Literal["cpu", "cuda", "jetson"] = "cpu"
    out: Path = Path("bundles/default")
    classifier: str = "efficientnet_lite0"
    weights: Path | None = None
    classes: Path | None = None
    segmenter: str = "lite0_seg"
    segmenter_weights: Path | None = None
    calib: Path | None = None
    calib_limit: int = 128
    val: Path | None = None
    val_limit: int | None = None
    int8: bool = False
    min_agreement: float = 0.97
    force: bool = False
    # laid over edge.thresholds' defaults, the one copy of them
    extra_thresholds: dict[str, float] = field(default_factory=dict)

    @property
    def precision(self) -> Literal["fp32", "fp16", "int8"]:
        if self.target == "cpu" or self.int8:
            return "int8"
        return "fp16"


def _versions() -> dict[str, str]:
    out = {}
    for dist in ("overmap-edge", "torch", "torchvision", "onnx", "onnxruntime", "numpy"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            continue
    return out


def _image_files(folder: Path, limit: int | None) -> list[Path]:
    exts = {".jpg", ".jpeg", ".png"}
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in exts and p.is_file())
    if not files:
        raise FileNotFoundError(f"{folder}: no images (.jpg, .jpeg, .png) found")
    return files[:limit] if limit else files


def default_val_dir() -> Path | None:
    """The imagenet-sample next to the checkout (../shared/data), when it is there."""
    here = Path(__file__).resolve().parent.parent
    for cand in (here.parent / "shared/data/imagenet-sample", here / "data/imagenet-sample"):
        if (cand / "labels.csv").is_file():
            return cand
    return None


def _quantize(fp32: Path, out: Path, spec: InputSpec, calib: list[Path], opts: ExportOptions):
    from export.calibration import CalibrationFrames
    from export.quantize import convert_fp16, prepare_for_quantization, quantize_int8

    if opts.precision == "fp16":
        # the same clean graph INT8 starts from: pads folded into convs, 1.7x faster in FP32
        clean = prepare_for_quantization(fp32, fp32.with_suffix(".clean.onnx"))
        convert_fp16(clean, out)
        clean.unlink()
        return {"method": "fp16", "graph": "static pads folded into convs"}
    reader = CalibrationFrames(calib, spec)
    return quantize_int8(fp32, out, reader, for_tensorrt=opts.target != "cpu")


def _mask_fn(segmenter: Path, spec: InputSpec, size: tuple[int, int]):
    """Masks from the FP32 segmenter, so Over-MAP drift is measured as the device scores it."""
    import cv2
    import onnxruntime as ort

    from edge.preprocess import prepare

    sess = ort.InferenceSession(str(segmenter), providers=[CPU])

    def masks(frames: list[np.ndarray]) -> np.ndarray:
        fg = sess.run(None, {"image": prepare(frames, spec)})[0][:, 0]
        return np.stack(
            [cv2.resize(m, (size[1], size[0]), interpolation=cv2.INTER_LINEAR) for m in fg]
        )

    return masks


def _segmenter_agreement(fp32: Path, quant: Path, spec: InputSpec, images: list[Path]) -> dict:
    """IoU between the FP32 and the quantized segmenter's masks (p > 0.5) on real frames."""
    import onnxruntime as ort

    from edge.decode import load_image
    from edge.preprocess import prepare

    a = ort.InferenceSession(str(fp32), providers=[CPU])
    b = ort.InferenceSession(str(quant), providers=[CPU])
    ious, diffs = [], []
    for i in range(0, len(images), 16):
        x = prepare([load_image(p) for p in images[i : i + 16]], spec)
        fa = a.run(["foreground"], {"image": x})[0] > 0.5
        fb = b.run(["foreground"], {"image": x})[0] > 0.5
        inter = (fa & fb).sum(axis=(1, 2, 3))
        union = (fa | fb).sum(axis=(1, 2, 3))
        ious.extend(np.where(union > 0, inter / np.maximum(union, 1), 1.0).tolist())
        diffs.extend((fa != fb).mean(axis=(1, 2, 3)).tolist())
    return {
        "mask_iou_vs_fp32": float(np.mean(ious)),
        "pixel_disagreement": float(np.mean(diffs)),
        "n_images": len(images),
    }


def run_export(opts: ExportOptions, console: Console | None = None) -> Path:
    """Build the bundle described by `opts` at `opts.out`; return its path.

    Raises :class:`ExportRefused` when the quantized classifier agrees with FP32 on fewer
    than `opts.min_agreement` of the validation images (unless `opts.force`).
    """
    from export.calibration import builtin_calibration_dir
    from export.joint import JointLite0, export_joint_onnx, shares_backbone
    from export.models import build_classifier
    from export.onnx_io import export_classifier_onnx
    from export.segmenter import build_segmenter, export_segmenter_onnx
    from export.validate import read_labelled_folder, validate_classifier

    console = console or Console(stderr=True)
    thresholds = Thresholds().merged(opts.extra_thresholds)  # refused before minutes of work
    out = Path(opts.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        console.print(f"[bold]classifier[/] {opts.classifier}")
        clf = build_classifier(opts.classifier, weights=opts.weights, classes=opts.classes)
        size = clf.input.size
        seg = build_segmenter(opts.segmenter, weights=opts.segmenter_weights, input=clf.input)
        console.print(f"[bold]segmenter[/] {seg.name}")

        fp32_c, fp32_s = work / "classifier.fp32.onnx", work / "segmenter.fp32.onnx"
        joint = shares_backbone(clf, seg)
        if joint:
            console.print(
                "segmenter shares the classifier's backbone: one graph returns "
                "logits, cam and foreground"
            )
            export_joint_onnx(JointLite0(clf.model, seg.model, clf.guess), fp32_c, size)
        else:
            if clf.guess is not None:
                console.print("[yellow]the guess head needs the shared backbone: left out[/]")
                clf.guess_classes = []
            export_classifier_onnx(clf.model, fp32_c, size)
        export_segmenter_onnx(seg, fp32_s, seg.input.size)

        calib_dir = opts.calib or builtin_calibration_dir()
        calib = _image_files(calib_dir, opts.calib_limit)
        console.print(
            f"[bold]{opts.precision}[/] for target {opts.target}, calibration: "
            f"{len(calib)} frames from {calib_dir}"
        )
        q_c = _quantize(fp32_c, work / "classifier.onnx", clf.input, calib, opts)
        q_s = _quantize(fp32_s, work / "segmenter.onnx", seg.input, calib, opts)

        val_dir = opts.val or default_val_dir()
        if val_dir is None:
            raise FileNotFoundError("no validation images: pass --val DIR")
        paths, labels, _ = read_labelled_folder(val_dir)
        if opts.val_limit:
            paths = paths[: opts.val_limit]
            labels = labels[: opts.val_limit] if labels is not None else None
        if labels is not None and opts.classes is None and opts.classifier != "efficientnet_lite0":
            labels = None  # the folder's class ids need not match a custom classifier's
        console.print(
            f"[bold]validating[/] against FP32 PyTorch on {len(paths)} images from {val_dir}"
        )
        figures = validate_classifier(
            clf.model,
            work / "classifier.onnx",
            paths,
            labels,
            clf.input,
            masks_fn=_mask_fn(fp32_s, seg.input, size),
            progress=True,
        )
        figures["overmap_mask"] = "FP32 segmenter"
        device_seg = work / ("classifier.onnx" if joint else "segmenter.onnx")
        figures["segmenter"] = _segmenter_agreement(fp32_s, device_seg, seg.input, paths[:64])
        figures["val_dir"] = str(val_dir)
        agreement = figures["top1_agreement"]
        if agreement < opts.min_agreement and not opts.force:
            raise ExportRefused(
                f"top-1 agreement with FP32 is {agreement:.1%}, under the bar of "
                f"{opts.min_agreement:.1%}: the {opts.precision} classifier changes too many "
                "answers. Try more or other calibration frames (--calib), or --force."
            )
        for p in (fp32_c, fp32_s):
            p.unlink()
        h, w = size
        manifest = Manifest(
            format_version=FORMAT_VERSION,
            created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            target=opts.target,
            providers=target_providers(opts.target),
            classifier=ClassifierSpec(
                file=file_entry(work, "classifier.onnx"),
                name=clf.name,
                input=clf.input,
                classes=clf.classes,
                empty_classes=list(clf.empty_classes),
                human_classes=list(clf.human_classes),
                cam_layer=clf.cam_layer,
                cam_size=_cam_size(work / "classifier.onnx", clf.input),
                precision=opts.precision,
                guess_classes=clf.guess_classes if joint else [],
                head_kind=clf.head_kind,
                maps=clf.maps,
            ),
            segmenter=SegmenterSpec(
                file=file_entry(work, "segmenter.onnx"),
                name=seg.name,
                input=seg.input,
                output_size=seg.output_size(h, w),
                precision=opts.precision,
                in_classifier=joint,
            ),
            thresholds=thresholds.as_dict(),
            validation=figures,
            calibration={
                "dir": str(calib_dir),
                "frames": len(calib),
                "classifier": _public(q_c),
                "segmenter": _public(q_s),
            },
            versions=_versions(),
        )
        write_manifest(work, manifest)
        _swap_into_place(work, out)
        return out
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)


def _public(report: dict) -> dict:
    """The quantizer's report without the temporary paths it worked in."""
    return {k: v for k, v in report.items() if k != "file"}


def _cam_size(onnx_path: Path, spec: InputSpec) -> tuple[int, int]:
    """Run the exported classifier once to learn the map's resolution."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=[CPU])
    x = np.zeros((1, 3, *spec.size), np.float32)
    cam = sess.run(["cam"], {"image": x})[0]
    return int(cam.shape[-2]), int(cam.shape[-1])


def _swap_into_place(work: Path, out: Path) -> None:
    """Replace `out` with `work` so readers see the old bundle or the new one, never a mix."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
    work.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
