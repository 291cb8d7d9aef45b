"""The bundle's segmenter: the committed lite0_seg head through real ONNX Runtime on real Pet
trimaps, a torchvision segmenter through the same interface, and clear errors for bad weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edge.decode import load_image
from edge.preprocess import prepare
from export.segmenter import (
    DEFAULT_HEAD_WEIGHTS,
    SegmenterError,
    SegmenterSource,
    build_segmenter,
    export_segmenter_onnx,
    lite0_output_size,
)
from export.train_segmenter import default_data_dir, iou_figures, load_pets_masks

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
PETS = default_data_dir()
# Mean per-image IoU (boundary ignored) of the committed head on every 5th test image (40),
# measured with `python -m export.train_segmenter` weights through ONNX Runtime.
MEASURED_IOU_40 = 0.937
TOLERANCE = 0.02


def _session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def lite0_seg() -> SegmenterSource:
    torch.set_num_threads(1)
    return build_segmenter()


@pytest.fixture(scope="module")
def lite0_onnx(lite0_seg: SegmenterSource, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_segmenter_onnx(lite0_seg, tmp_path_factory.mktemp("seg") / "seg.onnx", (224, 224))


@pytest.fixture(scope="module")
def pets_test40() -> list[tuple[np.ndarray, np.ndarray, str]]:
    return load_pets_masks(PETS, "test")[::5]


def test_onnx_graph_is_the_contract(lite0_onnx: Path) -> None:
    model = onnx.load(str(lite0_onnx))
    (inp,), (out,) = model.graph.input, model.graph.output
    assert inp.name == "image" and out.name == "foreground"
    dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    assert dims == ["batch", 1, 28, 28]


def test_onnx_iou_on_real_pet_trimaps(
    lite0_seg: SegmenterSource, lite0_onnx: Path, pets_test40
) -> None:
    """The exported default segmenter, fed the way the device feeds it, finds the pets."""
    images = [im for im, _, _ in pets_test40]
    x = prepare(images, lite0_seg.input)
    probs = _session(lite0_onnx).run(["foreground"], {"image": x})[0]
    assert probs.shape == (40, 1, 28, 28)
    assert probs.min() >= 0 and probs.max() <= 1
    figures = iou_figures(list(probs[:, 0]), [t for _, t, _ in pets_test40])
    assert figures["ignore_boundary_mean_iou"] >= MEASURED_IOU_40 - TOLERANCE, figures
    # Shuffled masks must score far worse: the IoU is about these images, not a blob in the middle.
    shuffled = iou_figures(list(probs[::-1, 0]), [t for _, t, _ in pets_test40])
    assert shuffled["ignore_boundary_mean_iou"] < figures["ignore_boundary_mean_iou"] - 0.2


def test_onnx_matches_torch(lite0_seg: SegmenterSource, lite0_onnx: Path, pets_test40) -> None:
    x = prepare([im for im, _, _ in pets_test40[:4]], lite0_seg.input)
    with torch.no_grad():
        ref = lite0_seg.model(torch.from_numpy(x)).numpy()
    got = _session(lite0_onnx).run(["foreground"], {"image": x})[0]
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_lite0_output_size_follows_same_padding(lite0_seg: SegmenterSource) -> None:
    x = torch.zeros(1, 3, 150, 203)
    with torch.no_grad():
        out = lite0_seg.model(x)
    assert tuple(out.shape[-2:]) == lite0_output_size(150, 203) == (19, 26)


def test_default_input_spec_is_lite0s(lite0_seg: SegmenterSource) -> None:
    spec = lite0_seg.input
    assert spec.size == (224, 224) and spec.resize == "stretch" and spec.color_order == "RGB"
    assert spec.mean == (127.0, 127.0, 127.0) and spec.std == (128.0, 128.0, 128.0)


def test_torchvision_lraspp_exports_background_complement(tmp_path: Path) -> None:
    torch.manual_seed(0)
    src = build_segmenter("lraspp_mobilenet_v3_large")
    assert src.input.mean == (123.675, 116.28, 103.53)
    path = export_segmenter_onnx(src, tmp_path / "lraspp.onnx", (96, 128))
    frame = load_image(DATA / "camtrap" / "peru_s90_animl" / "S90_SDZG1" / "EK000001.JPG")
    x = np.concatenate([prepare([frame], src.input.model_copy(update={"size": (96, 128)}))] * 3)
    got = _session(path).run(["foreground"], {"image": x})[0]
    assert got.shape == (3, 1, 96, 128) == (3, 1, *src.output_size(96, 128))
    assert got.min() >= 0 and got.max() <= 1
    with torch.no_grad():
        logits = src.model.model(torch.from_numpy(x))["out"]
    expected = 1 - torch.softmax(logits, dim=1)[:, :1].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_torchvision_class_count_comes_from_the_weights(tmp_path: Path) -> None:
    import torchvision

    net = torchvision.models.get_model(
        "lraspp_mobilenet_v3_large", weights=None, weights_backbone=None, num_classes=3
    )
    torch.save(net.state_dict(), tmp_path / "three.pt")
    src = build_segmenter("lraspp_mobilenet_v3_large", weights=tmp_path / "three.pt")
    w = src.model.model.classifier.high_classifier.weight
    assert w.shape[0] == 3 and torch.equal(w, net.classifier.high_classifier.weight)


def test_wrong_weights_are_refused_clearly(tmp_path: Path) -> None:
    import torchvision

    net = torchvision.models.get_model(
        "lraspp_mobilenet_v3_large", weights=None, weights_backbone=None, num_classes=21
    )
    other = tmp_path / "lraspp.pt"
    torch.save(net.state_dict(), other)
    with pytest.raises(SegmenterError, match=r"lraspp\.pt: these weights do not fit"):
        build_segmenter(weights=other)
    with pytest.raises(SegmenterError, match="do not fit torchvision deeplabv3"):
        build_segmenter("deeplabv3_mobilenet_v3_large", weights=DEFAULT_HEAD_WEIGHTS)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(SegmenterError, match="not a readable torch state dict"):
        build_segmenter(weights=junk)
    with pytest.raises(SegmenterError, match="not found"):
        build_segmenter(weights=tmp_path / "missing.pt")
    with pytest.raises(SegmenterError, match="unknown segmenter"):
        build_segmenter("unet_resnet34")


def test_camtrap_boxes_are_edge_masks_own() -> None:
    """One rule for boxes: the camera-trap figures parse and rasterise them with edge.masks,
    every pixel a box touches (as the old box_mask did), not with a second copy here."""
    import export.train_segmenter as ts
    from edge import masks

    assert ts.boxes_from_labels_bbox is masks.boxes_from_labels_bbox
    assert ts.mask_from_boxes is masks.mask_from_boxes
    assert not hasattr(ts, "box_mask") and not hasattr(ts, "parse_boxes")
    boxes = masks.boxes_from_labels_bbox("0.33,0.05,0.09,0.05")
    fine = masks.mask_from_boxes(boxes, (4 * 8, 8 * 8), touch=True)
    cover = fine.reshape(4, 8, 8, 8).mean(axis=(1, 3))
    assert cover[0, 2] > 0 and cover[0, 3] > 0 and cover.sum() > 0
