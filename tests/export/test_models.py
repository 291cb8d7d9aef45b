"""The classifier registry: the default Lite0, torchvision families split at their last conv
block (checked against the unsplit model and autograd Grad-CAM), and project checkpoints."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torchvision import models as tvm

from edge.bundle import InputSpec
from edge.preprocess import prepare
from export.lite0 import EfficientNetLite0
from export.models import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_classifier,
    load_checkpoint,
    save_checkpoint,
    torchvision_input,
)

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"

CLASSES = ["cat", "dog", "empty"]


def test_default_is_the_imagenet_lite0(lite0_source) -> None:  # type: ignore[no-untyped-def]
    with open(str(SHARED / "imagenet-sample/labels.csv"), newline="") as f:
        names = {int(r["class_id"]): r["class_name"] for r in csv.DictReader(f)}
    src = lite0_source
    assert src.name == "efficientnet_lite0" and src.cam_layer == "features"
    assert src.classes == [names[i] for i in range(1000)]
    assert src.input == InputSpec(
        size=(224, 224), mean=(127.0,) * 3, std=(128.0,) * 3, resize="center_crop"
    )
    assert src.empty_classes == [] and src.human_classes == []
    assert not src.model.training


def test_torchvision_input_is_imagenet_on_0_255_pixels() -> None:
    spec = torchvision_input("resnet50")
    assert spec.size == (224, 224) and spec.resize == "center_crop"
    np.testing.assert_allclose(spec.mean, [123.675, 116.28, 103.53])
    np.testing.assert_allclose(spec.std, [58.395, 57.12, 57.375])
    assert spec.mean == IMAGENET_MEAN and spec.std == IMAGENET_STD
    assert torchvision_input("efficientnet_b3").size == (300, 300)  # its weights' crop size


FAMILIES = [
    ("resnet18", "layer4"),
    ("mobilenet_v2", "features"),
    pytest.param("mobilenet_v3_small", "features", marks=pytest.mark.slow),  # v3_large: test_cam
    pytest.param("efficientnet_b0", "features", marks=pytest.mark.slow),  # also in test_cam
    ("regnet_y_400mf", "trunk_output"),
    ("shufflenet_v2_x0_5", "conv5"),
    ("mnasnet0_5", "layers"),
    pytest.param("densenet121", "features+relu", marks=pytest.mark.slow),
    pytest.param("convnext_tiny", "features", marks=pytest.mark.slow),
    pytest.param("resnext50_32x4d", "layer4", marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("name", "layer"), FAMILIES)
def test_family_splits_into_features_and_head(  # type: ignore[no-untyped-def]
    name: str, layer: str, tmp_path: Path, imagenet_batch, ref: SimpleNamespace
) -> None:
    torch.manual_seed(0)
    original = tvm.get_model(name, weights=None, num_classes=len(CLASSES))
    x = torch.from_numpy(prepare(imagenet_batch(2, 2), torchvision_input(name)))
    x = torch.nn.functional.interpolate(x, size=(128, 128), mode="area")  # keep it quick
    ref.calibrate_batchnorm(original, x)
    torch.save(original.state_dict(), tmp_path / "w.pth")
    (tmp_path / "classes.txt").write_text("\n".join(CLASSES) + "\n")

    src = build_classifier(name, weights=tmp_path / "w.pth", classes=tmp_path / "classes.txt")
    assert src.name == name and src.cam_layer == layer and src.classes == CLASSES
    with torch.no_grad():
        want = original(x).numpy()
        logits, cam = src.model(x)
    np.testing.assert_allclose(logits.numpy(), want, rtol=1e-5, atol=1e-6 * np.abs(want).max())
    _, ref_cam = ref.gradcam_autograd(src.model.requires_grad_(False), x)
    assert cam.shape == ref_cam.shape and (cam.numpy() >= 0).all()
    assert np.abs(ref.minmax(cam.numpy()) - ref.minmax(ref_cam)).max() <= 1e-5


def test_unknown_layouts_and_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="SqueezeNet: unknown layout"):
        build_classifier("squeezenet1_0")
    with pytest.raises(ValueError, match="unknown classifier 'no_such_net'"):
        build_classifier("no_such_net")


def test_weights_with_other_classes_need_a_classes_file(tmp_path: Path) -> None:
    torch.save(tvm.mobilenet_v3_small(num_classes=3).state_dict(), tmp_path / "w.pth")
    with pytest.raises(ValueError, match="has 3 outputs: pass classes="):
        build_classifier("mobilenet_v3_small", weights=tmp_path / "w.pth")
    (tmp_path / "c.txt").write_text("a\nb\n")
    with pytest.raises(ValueError, match="do not fit mobilenet_v3_small with 2 classes"):
        build_classifier(
            "mobilenet_v3_small", weights=tmp_path / "w.pth", classes=tmp_path / "c.txt"
        )
    with pytest.raises(ValueError, match="ImageNet Lite0 has 1000 classes"):
        build_classifier(classes=tmp_path / "c.txt")


def test_checkpoint_round_trip(lite0_source, imagenet_batch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # What `edge train` writes: the ImageNet Lite0 backbone with a new linear head.
    torch.manual_seed(0)
    trained = EfficientNetLite0(len(CLASSES)).eval()
    trained.features.load_state_dict(lite0_source.model.features.state_dict())
    spec = InputSpec(size=(224, 224), mean=(127.0,) * 3, std=(128.0,) * 3, resize="stretch")
    path = save_checkpoint(
        tmp_path / "m.pt",
        arch="efficientnet_lite0",
        state_dict=trained.state_dict(),
        classes=CLASSES,
        input=spec,
        empty_classes=["empty"],
    )
    ckpt = load_checkpoint(path)
    assert ckpt["format"] == "overmap-classifier" and ckpt["version"] == 1
    assert ckpt["input"] == spec and ckpt["human_classes"] == []

    x = torch.from_numpy(prepare(imagenet_batch(4, 2), spec))
    with torch.no_grad():
        want = trained(x)
    for src in (build_classifier(path), build_classifier(weights=path)):
        assert src.name == "efficientnet_lite0" and src.classes == CLASSES
        assert src.input == spec and src.empty_classes == ["empty"] and src.human_classes == []
        with torch.no_grad():
            logits, cam = src.model(x)
        torch.testing.assert_close(logits, want, rtol=1e-5, atol=1e-5)
        assert cam.shape == (2, 7, 7)

    with pytest.raises(ValueError, match="holds a efficientnet_lite0, not a resnet18"):
        build_classifier("resnet18", weights=path)
    with pytest.raises(ValueError, match=r"\['person'\] are not among the classes"):
        save_checkpoint(
            tmp_path / "bad.pt",
            arch="efficientnet_lite0",
            state_dict={},
            classes=CLASSES,
            input=spec,
            human_classes=["person"],
        )
    raw = torch.load(path, weights_only=True)
    torch.save({**raw, "version": 2}, tmp_path / "v2.pt")
    with pytest.raises(ValueError, match="checkpoint version 2"):
        build_classifier(tmp_path / "v2.pt")
