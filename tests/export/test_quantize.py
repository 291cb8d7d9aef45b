"""INT8 and FP16 exports of the real Lite0, checked on real images with real ORT sessions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest_quant import *  # noqa: F403 - the session fixtures
from conftest_quant import SPEC, imagenet_subset
from onnx import numpy_helper

from edge.decode import load_image
from edge.preprocess import prepare
from export.calibration import CalibrationFrames, builtin_calibration_dir
from export.quantize import convert_fp16, feature_nodes, prepare_for_quantization, quantize_int8
from export.validate import validate_classifier


def _graph_parts(path: Path) -> tuple[onnx.GraphProto, dict, dict]:
    graph = onnx.load(str(path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    return graph, inits, producer


def test_builtin_calibration_set_is_small_real_and_not_the_validation_set() -> None:
    files = sorted(builtin_calibration_dir().glob("*.jpg"))
    assert 64 <= len(files) <= 128
    assert sum(f.stat().st_size for f in files) <= 2_000_000
    sources = (builtin_calibration_dir() / "sources.csv").read_text()
    assert "imagenet-sample" not in sources
    assert {f.name.split("_")[0] for f in files} >= {"camday", "camnight", "pets37"}
    x = CalibrationFrames(builtin_calibration_dir(), SPEC, limit=4, progress=False).arrays()
    assert x.shape == (4, 3, 224, 224) and x.dtype == np.float32


def test_graph_cleaning_keeps_outputs_and_removes_pads(fp32_onnx: Path, tmp_path: Path) -> None:
    clean = prepare_for_quantization(fp32_onnx, tmp_path / "clean.onnx")
    ops = {n.op_type for n in onnx.load(str(clean)).graph.node}
    assert "Pad" not in ops
    paths, _ = imagenet_subset(4)
    x = prepare([load_image(p) for p in paths], SPEC)
    a = ort.InferenceSession(str(fp32_onnx), providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(clean), providers=["CPUExecutionProvider"])
    for ya, yb in zip(a.run(None, {"image": x}), b.run(None, {"image": x}), strict=True):
        np.testing.assert_allclose(ya, yb, rtol=1e-4, atol=1e-4)


def test_int8_conv_weights_are_int8_per_channel(int8_onnx: tuple[Path, dict]) -> None:
    path, recipe = int8_onnx
    graph, inits, producer = _graph_parts(path)
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert len(convs) == 49
    first = {c.name for c in convs[:3]}
    assert set(recipe["kept_float"]) == first  # stem and first block stay float, by design
    for conv in convs[:3]:
        assert conv.input[1] in inits and inits[conv.input[1]].dtype == np.float32
    for conv in convs[3:]:
        dq = producer[conv.input[1]]
        assert dq.op_type == "DequantizeLinear", conv.name
        weight, scale = inits[dq.input[0]], inits[dq.input[1]]
        assert weight.dtype == np.int8, conv.name
        assert scale.size == weight.shape[0] > 1, conv.name  # one scale per output channel
        act = producer[conv.input[0]]
        assert act.op_type == "DequantizeLinear", conv.name  # the input is quantized too


def test_int8_keeps_head_and_map_branch_float(int8_onnx: tuple[Path, dict]) -> None:
    path, recipe = int8_onnx
    graph, inits, producer = _graph_parts(path)
    assert [o.name for o in graph.output] == ["logits", "cam"]
    for node in graph.node:
        if node.op_type in {"Gemm", "Gather", "Einsum", "ArgMax"}:
            for name in node.input:
                src = producer.get(name)
                assert (
                    src is None or src.op_type != "DequantizeLinear" or name.startswith("/features")
                ), f"{node.name} reads a dequantized head tensor {name}"
            assert all(inits.get(n, np.zeros(1, np.float32)).dtype != np.int8 for n in node.input)
    assert recipe["activations"] == "QUInt8" and recipe["per_channel"]


def test_int8_agrees_with_fp32_on_real_images(
    fp32_onnx: Path, int8_onnx: tuple[Path, dict]
) -> None:
    paths, labels = imagenet_subset(64)
    fig = validate_classifier(fp32_onnx, int8_onnx[0], paths, labels, SPEC, progress=False)
    assert fig["n_images"] == 64
    assert fig["top1_agreement"] >= 0.95, fig
    assert fig["cam_correlation"] > 0.9, fig
    assert fig["overmap_drift_mean"] < 0.1, fig
    assert abs(fig["top1_accuracy_onnx"] - fig["top1_accuracy_fp32"]) <= 0.05, fig


@pytest.mark.slow
def test_tensorrt_variant_is_symmetric_int8(fp32_onnx: Path, tmp_path: Path) -> None:
    reader = CalibrationFrames(builtin_calibration_dir(), SPEC, limit=8, progress=False)
    recipe = quantize_int8(fp32_onnx, tmp_path / "trt.onnx", reader, for_tensorrt=True)
    graph, inits, _ = _graph_parts(tmp_path / "trt.onnx")
    qs = [n for n in graph.node if n.op_type in {"QuantizeLinear", "DequantizeLinear"}]
    assert qs and recipe["activations"] == "QInt8"
    for node in qs:
        zero_point = inits[node.input[2]]
        if zero_point.dtype == np.int32:  # a bias: int32 with scale = input x weight scale
            continue
        assert zero_point.dtype == np.int8 and not zero_point.any(), node.name
    n_features = len(
        feature_nodes(onnx.load(str(prepare_for_quantization(fp32_onnx, tmp_path / "clean.onnx"))))[
            0
        ]
    )
    assert recipe["nodes_quantized"] == n_features - 3  # the first three convs stay float


@pytest.mark.slow
def test_array_calibration_is_accepted(fp32_onnx: Path, tmp_path: Path) -> None:
    x = CalibrationFrames(builtin_calibration_dir(), SPEC, limit=8, progress=False).arrays()
    recipe = quantize_int8(fp32_onnx, tmp_path / "a.onnx", x)
    assert recipe["calibration_frames"] == 8
    sess = ort.InferenceSession(str(tmp_path / "a.onnx"), providers=["CPUExecutionProvider"])
    logits, cam = sess.run(None, {"image": x[:2]})
    assert logits.shape == (2, 1000) and cam.shape == (2, 7, 7) and (cam >= 0).all()


def test_bad_method_is_refused(fp32_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="method"):
        quantize_int8(fp32_onnx, tmp_path / "x.onnx", np.zeros((1, 3, 224, 224)), method="mse")


@pytest.mark.slow
def test_fp16_agrees_with_fp32(fp32_onnx: Path, tmp_path: Path) -> None:
    half = convert_fp16(fp32_onnx, tmp_path / "fp16.onnx")
    sess = ort.InferenceSession(str(half), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].type == "tensor(float)"
    assert [o.type for o in sess.get_outputs()] == ["tensor(float)"] * 2
    paths, labels = imagenet_subset(64)
    fig = validate_classifier(fp32_onnx, half, paths, labels, SPEC, progress=False)
    assert fig["top1_agreement"] >= 0.99, fig
    assert fig["cam_correlation"] > 0.99, fig
