"""Quantize an exported classifier to INT8 (CPU, TensorRT) or convert it to FP16 (CUDA, Jetson).

What makes Lite0's INT8 both fast and faithful on ONNX Runtime's CPU EP (see
docs/quantization.md for the measurements behind each choice):

- The graph is cleaned first. TF-style SAME padding exports as a Pad fed by shape arithmetic;
  the spatial size is fixed by the bundle, so we evaluate those pads once, fold them into the
  following Conv and drop the arithmetic. Without this, every Pad is a float island between
  DequantizeLinear and QuantizeLinear and INT8 ends up slower than FP32.
- Only the feature extractor is quantized, every op of it (Conv, Clip, Add), so tensors stay
  integer from the first Conv to the map's layer. The head and the map's branch stay float:
  the map gathers the head's weights by the top class (a per-channel quantized Gather breaks
  at run time), and the head is one small Gemm whose INT8 rounding costs agreement for nothing.
- The first convolutions (stem and first block) stay float: they are where INT8 rounding
  costs the most agreement, and they gain no speed from it (the stem has 3 input channels).
- Weights per channel (depthwise convs have wildly different channel ranges), uint8 activations
  with int8 weights (the U8S8 VNNI fast path on x86), calibrated on real frames.
- For TensorRT: symmetric int8 activations and weights in QDQ form, which is what it consumes.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)

from export.calibration import ArrayFrames

METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
    "distribution": CalibrationMethod.Distribution,
}
POOL_OPS = {"ReduceMean", "GlobalAveragePool"}
HEAD_OPS = {"Gemm", "MatMul"}


# ---------------------------------------------------------------- graph preparation


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            out.setdefault(name, []).append(node)
    return out


def fold_static_pads(model: onnx.ModelProto, input_shape: Sequence[int]) -> onnx.ModelProto:
    """Replace Pad amounts computed from shapes by constants, checked batch-independent.

    The amounts depend only on the spatial size, which a bundle fixes; we read them from one
    run at batch 1 and one at batch 2 and refuse to fold if they differ.
    """
    import onnxruntime as ort

    inits = {i.name for i in model.graph.initializer}
    dynamic = sorted(
        {n.input[1] for n in model.graph.node if n.op_type == "Pad" and n.input[1] not in inits}
    )
    if not dynamic:
        return model
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    for name in dynamic:
        probe.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.INT64, None))
    sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    feed_name = sess.get_inputs()[0].name
    values = []
    for batch in (1, 2):
        x = np.zeros((batch, *input_shape[1:]), np.float32)
        values.append(sess.run(dynamic, {feed_name: x}))
    for name, a, b in zip(dynamic, *values, strict=True):
        if not np.array_equal(a, b):
            raise ValueError(f"pads {name} depend on the batch size; cannot fold them")
        model.graph.initializer.append(numpy_helper.from_array(a.astype(np.int64), name + "_c"))
        for node in model.graph.node:
            if node.op_type == "Pad" and node.input[1] == name:
                node.input[1] = name + "_c"
    return model


def fuse_pad_into_conv(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fold zero, constant-mode, spatial-only Pads into the pads of the Conv they feed."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    consumers = _consumers(graph)
    drop: list[onnx.NodeProto] = []
    for pad in graph.node:
        if pad.op_type != "Pad" or pad.input[1] not in inits:
            continue
        mode = next((a.s for a in pad.attribute if a.name == "mode"), b"constant")
        value = pad.input[2] if len(pad.input) > 2 else ""
        value_zero = not value or (
            value in inits and not np.any(numpy_helper.to_array(inits[value]))
        )
        users = consumers.get(pad.output[0], [])
        if mode != b"constant" or not value_zero or len(users) != 1 or users[0].op_type != "Conv":
            continue
        amounts = numpy_helper.to_array(inits[pad.input[1]]).tolist()
        rank = len(amounts) // 2
        if rank != 4 or any(amounts[i] or amounts[rank + i] for i in (0, 1)):
            continue
        conv = users[0]
        attr = next((a for a in conv.attribute if a.name == "pads"), None)
        old = list(attr.ints) if attr is not None else [0, 0, 0, 0]
        if any(a.name == "auto_pad" and a.s not in (b"", b"NOTSET") for a in conv.attribute):
            continue
        new = [old[0] + amounts[2], old[1] + amounts[3], old[2] + amounts[6], old[3] + amounts[7]]
        if attr is not None:
            conv.attribute.remove(attr)
        conv.attribute.append(helper.make_attribute("pads", new))
        conv.input[0] = pad.input[0]
        drop.append(pad)
    for node in drop:
        graph.node.remove(node)
    return prune_dead_nodes(model)


def prune_dead_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Remove nodes whose outputs nobody uses, and initializers left without a user."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    while True:
        used = {name for node in graph.node for name in node.input} | outputs
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    used = {name for node in graph.node for name in node.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    return model


def prepare_for_quantization(fp32: Path, out: Path) -> Path:
    """fp32 ONNX -> a clean float graph: static pads fused into convs, shapes inferred."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = onnx.load(str(fp32))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    shape = [d.dim_value if d.dim_value > 0 else 1 for d in dims]
    if any(s <= 0 for s in shape[1:]):
        raise ValueError(f"the input needs a fixed C,H,W to quantize; got {shape}")
    model = fuse_pad_into_conv(fold_static_pads(model, shape))
    with tempfile.TemporaryDirectory() as tmp:
        folded = Path(tmp) / "folded.onnx"
        onnx.save(model, str(folded))
        quant_pre_process(str(folded), str(out), skip_symbolic_shape=False)
    model = prune_dead_nodes(onnx.load(str(out)))
    onnx.save(model, str(out))
    return out


def _attention_input(graph: onnx.GraphProto, producer: dict[str, onnx.NodeProto]) -> str | None:
    """The map's layer of an attention head (export.attention), which pools by no mean: the
    input of the 1x1 Conv whose output, flattened, goes through the spatial Softmax."""
    for node in graph.node:
        if node.op_type != "Softmax":
            continue
        up = producer.get(node.input[0])
        while up is not None and up.op_type in {"Reshape", "Flatten", "Transpose"}:
            up = producer.get(up.input[0])
        if up is not None and up.op_type == "Conv":
            return up.input[0]
    return None


def feature_nodes(model: onnx.ModelProto) -> tuple[list[str], str | None]:
    """Names of the nodes that compute the map's layer, and that layer's tensor name.

    The map's layer is the tensor pooled into the head (ReduceMean/GlobalAveragePool -> Gemm),
    or for an attention head the input of its attention Conv; its ancestors are the feature
    extractor. Everything else (head, argmax, the map's branch)
    is left out of quantization.
    """
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    consumers = _consumers(graph)
    features = None
    for node in graph.node:
        if node.op_type in POOL_OPS and any(
            c.op_type in HEAD_OPS or c.op_type in {"Flatten", "Reshape", "Squeeze"}
            for c in consumers.get(node.output[0], [])
        ):
            features = node.input[0]
            break
    if features is None:
        features = _attention_input(graph, producer)
    if features is None:
        return [n.name for n in graph.node], None
    keep: set[str] = set()
    stack = [features]
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in keep:
            continue
        keep.add(node.name)
        stack.extend(node.input)
    return [n.name for n in graph.node if n.name in keep], features


# ---------------------------------------------------------------- quantization


def _reader(calib: CalibrationDataReader | np.ndarray, input_name: str) -> CalibrationDataReader:
    if isinstance(calib, np.ndarray):
        return ArrayFrames(calib, input_name=input_name)
    rewind = getattr(calib, "rewind", None)
    if callable(rewind):  # a reader used before would otherwise feed nothing
        rewind()
    return calib


def quantize_int8(
    fp32: Path,
    out: Path,
    calib: CalibrationDataReader | np.ndarray,
    *,
    for_tensorrt: bool = False,
    method: str = "minmax",
    activation_type: QuantType | None = None,
    per_channel: bool = True,
    float_first_convs: int = 3,
    keep_float: Iterable[str] = (),
    op_types: Sequence[str] | None = None,
    extra_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Static INT8 QDQ quantization of the feature extractor, calibrated on real frames.

    Args:
        fp32: the float ONNX classifier (input `image`, outputs `logits`, `cam`).
        out: where to write the INT8 model.
        calib: a CalibrationDataReader (e.g. `CalibrationFrames`) or a float32 array
            [N,3,H,W] already preprocessed with `edge.preprocess.prepare`.
        for_tensorrt: symmetric int8 activations and weights (TensorRT's explicit-quantization
            form); otherwise uint8 activations, the fast U8S8 path of the CPU EP.
        method: calibration method, "minmax" (default), "entropy", "percentile".
        activation_type: override the activation type (QUInt8 / QInt8).
        per_channel: per-channel weight scales (keep True: depthwise convs need it).
        float_first_convs: leave the first n Conv nodes in float. For Lite0 these are the
            stem and the first block, where one rounding step costs the most (agreement with
            FP32 on imagenet-sample: 97.6 % with all convs INT8, 98.3 % with the first 3 float)
            and INT8 is no faster (3 input channels).
        keep_float: more node names to leave in float (e.g. from a sensitivity analysis).
        op_types: op types to quantize; None quantizes every supported op of the features.
        extra_options: passed to onnxruntime's quantize_static, over our defaults.

    Returns:
        A JSON-serialisable recipe: what was quantized, how, and the file written.
    """
    fp32, out = Path(fp32), Path(out)
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, not {method!r}")
    act = activation_type or (QuantType.QInt8 if for_tensorrt else QuantType.QUInt8)
    options: dict[str, Any] = {
        "ActivationSymmetric": for_tensorrt,
        "WeightSymmetric": True,
        "CalibMovingAverage": False,
    }
    if method == "percentile":
        options["CalibPercentile"] = 99.999
    if for_tensorrt:
        options["QDQKeepRemovableActivations"] = False
    options.update(extra_options or {})
    with tempfile.TemporaryDirectory() as tmp:
        pre = prepare_for_quantization(fp32, Path(tmp) / "pre.onnx")
        model = onnx.load(str(pre))
        input_name = model.graph.input[0].name
        nodes, features = feature_nodes(model)
        convs = [n.name for n in model.graph.node if n.op_type == "Conv" and n.name in nodes]
        skip = set(keep_float) | set(convs[: max(0, float_first_convs)])
        nodes = [n for n in nodes if n not in skip]
        quantize_static(
            str(pre),
            str(out),
            _reader(calib, input_name),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(op_types) if op_types else None,
            nodes_to_quantize=nodes,
            per_channel=per_channel,
            activation_type=act,
            weight_type=QuantType.QInt8,
            calibrate_method=METHODS[method],
            extra_options=options,
        )
    return {
        "file": str(out),
        "format": "QDQ",
        "activations": act.name,
        "weights": "QInt8",
        "per_channel": per_channel,
        "calibration": method,
        "calibration_frames": len(calib) if hasattr(calib, "__len__") else None,
        "for_tensorrt": for_tensorrt,
        "features_tensor": features,
        "nodes_quantized": len(nodes),
        "kept_float": sorted(skip),
        "extra_options": {k: v for k, v in options.items() if _jsonable(v)},
    }


def _jsonable(value: Any) -> bool:
    return isinstance(value, bool | int | float | str) or value is None


# ---------------------------------------------------------------- fp16


def convert_fp16(fp32: Path, out: Path) -> Path:
    """FP16 weights and compute for CUDA/Jetson; inputs and outputs stay float32.

    keep_io_types means the device feeds the same float32 batch whatever the precision. Cast
    nodes stay as they are: the converter turns their output type to float16 without changing
    their `to` attribute (the map's 1/(h*w) is a Cast of shape arithmetic), an invalid graph.
    """
    from onnxconverter_common import float16

    model = onnx.load(str(fp32))
    casts = [n.name for n in model.graph.node if n.op_type == "Cast"]
    half = float16.convert_float_to_float16(model, keep_io_types=True, node_block_list=casts)
    onnx.save(half, str(out))
    return Path(out)
