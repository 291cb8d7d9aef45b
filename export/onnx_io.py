"""Export a CamClassifier to ONNX: input `image` [N,3,H,W] -> `logits` [N,C], `cam` [N,h,w].

The classic TorchScript exporter is used: it turns the argmax, gather and einsum of the map
into plain ONNX ops with a dynamic batch axis, and writes one self-contained file.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import onnx
import torch

from export.attention import AttentionClassifier
from export.cam import CamClassifier

INPUT = "image"
OUTPUTS = ("logits", "cam")


def export_classifier_onnx(
    model: CamClassifier | AttentionClassifier,
    path: Path,
    size: tuple[int, int],
    opset: int = 17,
    *,
    outputs: Sequence[str] | None = None,
) -> Path:
    """Write `model` (in eval mode) to `path` for images of `size` (H, W); checked with
    onnx.checker. The batch axis is dynamic; H and W are fixed (the map's size follows them).
    `outputs` names the model's outputs in order (a joint model adds `foreground`); default
    the model's own `outputs` (an attention classifier adds `attention`), else OUTPUTS."""
    if outputs is None:
        outputs = getattr(model, "outputs", OUTPUTS)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    dummy = torch.zeros(2, 3, *size)
    axes = {name: {0: "batch"} for name in (INPUT, *outputs)}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the classic exporter's deprecation and tracer notes
        torch.onnx.export(
            model,
            (dummy,),
            str(path),
            input_names=[INPUT],
            output_names=list(outputs),
            dynamic_axes=axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
        results = model(dummy)
    _declare_output_shapes(path, [list(r.shape[1:]) for r in results])
    onnx.checker.check_model(str(path), full_check=True)
    return path


def _declare_output_shapes(path: Path, shapes: list[list[int]]) -> None:
    """Write the outputs' true shapes ([batch, C] and [batch, h, w]) into the graph.

    The exporter's shape inference loses track through TF-style padding and can label the map
    [batch, batch, ?]; a runtime that trusts those names would take h for the batch size."""
    model = onnx.load(str(path))
    for output, dims in zip(model.graph.output, shapes, strict=True):
        shape = output.type.tensor_type.shape
        del shape.dim[:]
        shape.dim.add().dim_param = "batch"
        for size in dims:
            shape.dim.add().dim_value = int(size)
    onnx.save(model, str(path))
