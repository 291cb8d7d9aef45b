"""MC dropout on the classifier's head: the sampling baseline that Over-MAP is compared with.

The bundle's graph has no dropout at inference, so evaluation taps the head's input (the pooled
features) out of the ONNX graph and samples dropout masks on it in numpy:
p_t = softmax(W (m_t * x / (1 - p)) + b), confidence = max_c mean_t p_t[c]. T samples cost T
head passes per frame (cheap for a linear head) on top of one full forward pass; the cost is
reported beside the figures. Needs the `onnx` package (an evaluation-time dependency).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.overmap import softmax


class NoHeadTap(ValueError):
    """The graph's logits do not come from a linear layer we can sample dropout on."""


@dataclass
class HeadTap:
    model: bytes  # the classifier with the head's input as an extra output "head_input"
    weight: np.ndarray  # [C, K]
    bias: np.ndarray  # [C]


def _array(name: str, inits: dict, producers: dict):
    """An initializer, or the float value of a DequantizeLinear of initializers."""
    from onnx import numpy_helper

    if name in inits:
        return numpy_helper.to_array(inits[name]).astype(np.float32)
    node = producers.get(name)
    if node is not None and node.op_type == "DequantizeLinear":
        q = numpy_helper.to_array(inits[node.input[0]]).astype(np.float32)
        scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        zero = (
            numpy_helper.to_array(inits[node.input[2]]).astype(np.float32)
            if len(node.input) > 2 and node.input[2]
            else np.zeros_like(scale)
        )
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        if scale.ndim == 1 and scale.size > 1:
            shape = [1] * q.ndim
            shape[axis] = -1
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        return (q - zero) * scale
    raise NoHeadTap(f"{name} is neither a constant nor a dequantized constant")


def head_tap(classifier: Path) -> HeadTap:
    """Find the Gemm (or MatMul + Add) that makes `logits` and expose its input."""
    import onnx

    model = onnx.load(str(classifier))
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    producers = {o: n for n in g.node for o in n.output}
    node = producers.get("logits")
    bias = None
    if node is not None and node.op_type == "Add":
        a, b = node.input
        matmul = producers.get(a)
        bias = _array(b, inits, producers)
        node = matmul if matmul is not None and matmul.op_type == "MatMul" else None
        if node is not None:
            weight = _array(node.input[1], inits, producers).T
    if node is None or node.op_type not in ("Gemm", "MatMul"):
        raise NoHeadTap("logits are not made by a linear layer; MC dropout is unavailable")
    if node.op_type == "Gemm":
        w = _array(node.input[1], inits, producers)
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        weight = w if trans_b else w.T
        bias = _array(node.input[2], inits, producers) if len(node.input) > 2 else None
    if bias is None:
        bias = np.zeros(weight.shape[0], np.float32)
    tap = onnx.helper.make_tensor_value_info(node.input[0], onnx.TensorProto.FLOAT, None)
    tap.name = node.input[0]
    g.output.append(tap)
    return HeadTap(model.SerializeToString(), weight.astype(np.float32), bias.astype(np.float32))


def mc_dropout_probs(
    x: np.ndarray, tap: HeadTap, *, p: float = 0.2, samples: int = 30, seed: int = 0
) -> np.ndarray:
    """Mean softmax over `samples` dropout masks on the head input x [N, K] -> [N, C]."""
    if not 0 <= p < 1:
        raise ValueError(f"dropout p must be in [0, 1), got {p}")
    rng = np.random.default_rng(seed)
    total = np.zeros((x.shape[0], tap.weight.shape[0]), np.float64)
    for _ in range(samples):
        keep = rng.random(x.shape) >= p
        z = (x * keep / (1 - p)) @ tap.weight.T + tap.bias
        total += softmax(z, axis=1)
    return (total / samples).astype(np.float32)
