"""validate_classifier on cases whose answer is known, plus its small measures by hand."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest_quant import *  # noqa: F403 - the session fixtures
from conftest_quant import SPEC, imagenet_subset

from edge.preprocess import resize_frame
from export.cam import CamClassifier
from export.validate import (
    map_correlation,
    overmap,
    read_labelled_folder,
    top_region,
    validate_classifier,
)

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"

PETS_MASKS = SHARED / "pets-masks"


def test_overmap_by_hand() -> None:
    maps = np.zeros((3, 4, 4))
    maps[0, :2] = 1.0  # all mass in the top half
    maps[1, :, :2] = 1.0  # half of it in the top half
    masks = np.zeros((3, 4, 4))
    masks[:, :2] = 1
    np.testing.assert_allclose(overmap(maps, masks), [1.0, 0.5, 0.0])


def test_map_correlation_and_top_region_by_hand() -> None:
    a = np.arange(16.0).reshape(1, 4, 4)
    np.testing.assert_allclose(map_correlation(a, 3 * a + 1), [1.0])
    np.testing.assert_allclose(map_correlation(a, -a), [-1.0])
    np.testing.assert_allclose(map_correlation(np.zeros((1, 2, 2)), np.zeros((1, 2, 2))), [1.0])
    region = top_region(a, share=0.25)
    assert region.sum() == 4 and region[0, 3].all()


def test_read_labelled_folder_understands_imagenet_sample() -> None:
    paths, labels, names = read_labelled_folder(str(SHARED / "imagenet-sample"))
    assert len(paths) == 1000 and all(p.exists() for p in paths[:20])
    assert labels is not None and sorted(labels) == list(range(1000))
    assert names is not None and names[0] == "tench" and names[1] == "goldfish"


def test_read_labelled_folder_without_labels(tmp_path: Path) -> None:
    src = sorted((PETS_MASKS / "images").glob("*.jpg"))[0]
    (tmp_path / "a.jpg").write_bytes(src.read_bytes())
    paths, labels, names = read_labelled_folder(tmp_path)
    assert paths == [tmp_path / "a.jpg"] and labels is None and names is None


def test_onnx_against_itself_is_perfect(fp32_onnx: Path) -> None:
    paths, labels = imagenet_subset(16)
    fig = validate_classifier(fp32_onnx, fp32_onnx, paths, labels, SPEC, batch=8, progress=False)
    assert fig["n_images"] == 16
    assert fig["top1_agreement"] == 1.0
    assert fig["top1_accuracy_fp32"] == fig["top1_accuracy_onnx"]
    assert fig["cam_correlation"] == pytest.approx(1.0, abs=1e-9)
    assert fig["overmap_drift_mean"] == 0.0 and fig["overmap_drift_max"] == 0.0


def test_torch_against_its_fp32_export(cam_model: CamClassifier, fp32_onnx: Path) -> None:
    paths, labels = imagenet_subset(16)
    fig = validate_classifier(cam_model, fp32_onnx, paths, labels, SPEC, progress=False)
    assert fig["top1_agreement"] == 1.0
    assert fig["cam_correlation"] > 0.9999
    assert fig["overmap_drift_max"] < 1e-3
    assert fig["top1_accuracy_fp32"] > 0.7  # the real ImageNet model, not a random one


def test_true_masks_through_masks_fn(cam_model: CamClassifier, fp32_onnx: Path) -> None:
    """Pet masks, resized like the model input; the map of a pet photo sits mostly on the pet."""
    images = sorted((PETS_MASKS / "images").glob("*.jpg"))[:8]

    def masks_fn(frames: list[np.ndarray]) -> np.ndarray:
        out = []
        for frame, path in zip(frames, images, strict=False):
            trimap = cv2.imread(str(PETS_MASKS / "masks" / (path.stem + ".png")), 0)
            assert trimap.shape == frame.shape[:2]
            pet = np.repeat((trimap == 1).astype(np.uint8)[..., None], 3, axis=2)
            out.append(resize_frame(pet, SPEC)[..., 0])
        return np.stack(out)

    fig = validate_classifier(
        cam_model, fp32_onnx, images, None, SPEC, masks_fn=masks_fn, batch=8, progress=False
    )
    assert fig["top1_accuracy_fp32"] is None and fig["overmap_mask"] == "masks_fn"
    assert fig["overmap_drift_max"] < 1e-3


def test_mismatched_labels_are_refused(fp32_onnx: Path) -> None:
    paths, labels = imagenet_subset(4)
    with pytest.raises(ValueError, match="labels"):
        validate_classifier(fp32_onnx, fp32_onnx, paths, labels[:2], SPEC, progress=False)
