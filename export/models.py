"""Classifiers enter `export/` here, by name, whatever they come from.

`build_classifier` takes the real ImageNet EfficientNet-Lite0 (the default), any torchvision
classification model whose layout we know, or a project checkpoint (what `edge train` writes),
and returns a :class:`ClassifierSource`: a :class:`~export.cam.CamClassifier` split at its last
convolutional block, with the class names and the input spec the bundle needs. Each layout is a
small "splitter" (model -> features, head, cam layer), so adding a family is one function.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edge.bundle import InputSpec
from export.attention import AttentionClassifier, AttentionHead
from export.cam import CamClassifier
from export.lite0 import MEAN as LITE0_MEAN
from export.lite0 import STD as LITE0_STD
from export.lite0 import EfficientNetLite0, load_imagenet_lite0

DEFAULT = "efficientnet_lite0"
ASSETS = Path(__file__).parent / "assets"
IMAGENET_CLASSES = ASSETS / "imagenet_classes.txt"
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)  # torchvision's, on 0..255 pixels
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
LITE0_INPUT = InputSpec(size=(224, 224), mean=LITE0_MEAN, std=LITE0_STD, resize="center_crop")

CHECKPOINT_FORMAT = "overmap-classifier"
CHECKPOINT_VERSION = 1

Split = tuple[nn.Module, nn.Module, str]  # features (up to the cam layer), head, cam layer name


@dataclass
class ClassifierSource:
    """A classifier ready to export: the model (eval mode) and what the manifest says of it."""

    model: CamClassifier | AttentionClassifier
    name: str
    classes: list[str]
    input: InputSpec
    cam_layer: str
    empty_classes: list[str] = field(default_factory=list)
    human_classes: list[str] = field(default_factory=list)
    guess: nn.Linear | None = None  # a second head on the pooled features (species guess)
    guess_classes: list[str] = field(default_factory=list)
    head_kind: str = "linear"  # "attention": an export.attention head, a second map source

    @property
    def maps(self) -> list[str]:
        """The map sources the exported graph returns (the manifest's `maps`)."""
        return ["cam", "attention"] if self.head_kind == "attention" else ["cam"]


# ---- splitting a model at its last convolutional block --------------------------------------


def _split_lite0(m: Any) -> Split:
    return m.features, nn.Sequential(m.dropout, m.classifier), "features"


def _split_resnet(m: Any) -> Split:
    body = nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool, m.layer1, m.layer2, m.layer3, m.layer4)
    return body, m.fc, "layer4"


def _split_features_classifier(m: Any) -> Split:
    # MobileNetV2/V3, EfficientNet, ConvNeXt (classifier = LayerNorm2d, Flatten, Linear).
    return m.features, m.classifier, "features"


def _split_regnet(m: Any) -> Split:
    return nn.Sequential(m.stem, m.trunk_output), m.fc, "trunk_output"


def _split_densenet(m: Any) -> Split:
    # DenseNet applies a ReLU after `features` in forward(); the map is taken after it.
    return nn.Sequential(m.features, nn.ReLU()), m.classifier, "features+relu"


def _split_mnasnet(m: Any) -> Split:
    return m.layers, m.classifier, "layers"


def _split_shufflenet(m: Any) -> Split:
    body = nn.Sequential(m.conv1, m.maxpool, m.stage2, m.stage3, m.stage4, m.conv5)
    return body, m.fc, "conv5"


def _splitters() -> list[tuple[type, Callable[[Any], Split]]]:
    from torchvision import models as tvm

    return [
        (EfficientNetLite0, _split_lite0),
        (tvm.ResNet, _split_resnet),  # also resnext*, wide_resnet*
        (tvm.MobileNetV2, _split_features_classifier),
        (tvm.MobileNetV3, _split_features_classifier),
        (tvm.EfficientNet, _split_features_classifier),
        (tvm.ConvNeXt, _split_features_classifier),
        (tvm.RegNet, _split_regnet),
        (tvm.DenseNet, _split_densenet),
        (tvm.MNASNet, _split_mnasnet),
        (tvm.ShuffleNetV2, _split_shufflenet),
    ]


FAMILIES = (
    "resnet",
    "resnext",
    "wide_resnet",
    "mobilenet_v2",
    "mobilenet_v3",
    "efficientnet_",
    "convnext_",
    "regnet_",
    "densenet",
    "mnasnet",
    "shufflenet_v2",
)


def split_classifier(model: nn.Module) -> Split:
    """(features, head, cam_layer) of a known layout: features end at the last conv block and
    the model is features -> global average pool -> head. Unknown layouts raise ValueError."""
    for kind, split in _splitters():
        if isinstance(model, kind):
            return split(model)
    raise ValueError(
        f"{type(model).__name__}: unknown layout, cannot find its last convolutional block and "
        f"head; supported families: efficientnet_lite0, {', '.join(FAMILIES)}"
    )


def cam_classifier(model: nn.Module) -> tuple[CamClassifier, str]:
    """Wrap a known model as a CamClassifier (eval mode), checked to give the same logits."""
    model = model.eval()
    features, head, cam_layer = split_classifier(model)
    cam = CamClassifier(features, head, cam_layer).eval()
    _check_same_logits(model, cam)
    return cam, cam_layer


def _check_same_logits(model: nn.Module, cam: CamClassifier) -> None:
    # A torchvision release that changed a forward() would silently give another model.
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model(x)
        got, _ = cam(x)
    tol = 1e-4 * max(1.0, float(want.abs().max()))
    if got.shape != want.shape or float((got - want).abs().max()) > tol:
        raise ValueError(
            f"{type(model).__name__}: the split features -> pool -> head does not reproduce the "
            "model's logits; its forward() is not the layout we assume"
        )


# ---- class names, input specs, checkpoints ----------------------------------------------------


def read_classes(path: Path) -> list[str]:
    """Class names, one per line (blank lines ignored)."""
    names = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    names = [n for n in names if n]
    if not names:
        raise ValueError(f"{path}: no class names (expected one name per line)")
    return names


def imagenet_classes() -> list[str]:
    return read_classes(IMAGENET_CLASSES)


def torchvision_input(name: str) -> InputSpec:
    """ImageNet normalisation on 0..255 pixels, at the crop size torchvision's weights use."""
    from torchvision import models as tvm

    size = 224
    try:
        weights = tvm.get_model_weights(name).DEFAULT
        size = int(getattr(weights.transforms, "keywords", {}).get("crop_size", size))
    except (ValueError, AttributeError):
        pass
    return InputSpec(size=(size, size), mean=IMAGENET_MEAN, std=IMAGENET_STD, resize="center_crop")


def save_checkpoint(
    path: Path,
    *,
    arch: str,
    state_dict: dict[str, torch.Tensor],
    classes: Sequence[str],
    input: InputSpec,
    empty_classes: Sequence[str] = (),
    human_classes: Sequence[str] = (),
    guess: tuple[torch.Tensor, torch.Tensor, Sequence[str]] | None = None,
    head: AttentionHead | None = None,
) -> Path:
    """Write a project checkpoint: the weights of `arch` (a name build_classifier knows) with
    len(classes) outputs, and what a bundle needs to use it. `guess`: (weight [G,F], bias [G],
    names) of a second linear head on the same pooled features, exported as output `guess`.
    `head`: an attention head on the backbone's map in place of the linear one; `state_dict`
    then holds the backbone (`features.*`) only."""
    if head is not None and head.classes != len(classes):
        raise ValueError(f"the attention head has {head.classes} classes, names {len(classes)}")
    unknown = [n for n in (*empty_classes, *human_classes) if n not in classes]
    if unknown:
        raise ValueError(f"empty/human class names {unknown} are not among the classes")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "arch": arch,
            "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
            "classes": list(classes),
            "input": input.model_dump(mode="json"),
            "empty_classes": list(empty_classes),
            "human_classes": list(human_classes),
            **(
                {}
                if head is None
                else {
                    "head": {
                        **head.spec(),
                        "state_dict": {k: v.detach().cpu() for k, v in head.state_dict().items()},
                    }
                }
            ),
            **(
                {}
                if guess is None
                else {
                    "guess": {
                        "weight": guess[0].detach().cpu(),
                        "bias": guess[1].detach().cpu(),
                        "classes": list(guess[2]),
                    }
                }
            ),
        },
        path,
    )
    return path


def is_checkpoint(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A project checkpoint as written by save_checkpoint, checked; `input` as an InputSpec."""
    obj = torch.load(Path(path), map_location="cpu", weights_only=True)
    return _checked_checkpoint(obj, Path(path))


def _checked_checkpoint(obj: Any, path: Path) -> dict[str, Any]:
    if not is_checkpoint(obj):
        raise ValueError(f"{path}: not an {CHECKPOINT_FORMAT} checkpoint")
    if obj.get("version") != CHECKPOINT_VERSION:
        raise ValueError(
            f"{path}: checkpoint version {obj.get('version')}, this code reads version "
            f"{CHECKPOINT_VERSION}"
        )
    missing = [k for k in ("arch", "state_dict", "classes", "input") if k not in obj]
    if missing:
        raise ValueError(f"{path}: checkpoint lacks {missing}")
    return {**obj, "input": InputSpec(**obj["input"])}


# ---- the factory ---------------------------------------------------------------------------


def available_classifiers() -> list[str]:
    """Names build_classifier accepts (besides checkpoint paths)."""
    from torchvision import models as tvm

    names = tvm.list_models(module=tvm)
    return [DEFAULT] + sorted(n for n in names if n.startswith(FAMILIES))


def _known_names() -> set[str]:
    from torchvision import models as tvm

    return {DEFAULT, *tvm.list_models(module=tvm)}


def _arch_model(arch: str, num_classes: int, state: dict[str, torch.Tensor] | None) -> nn.Module:
    """An architecture by name with num_classes outputs, loaded with `state` if given."""
    if arch == DEFAULT:
        if state is None and num_classes == 1000:
            return load_imagenet_lite0()
        model: nn.Module = EfficientNetLite0(num_classes)
    else:
        from torchvision import models as tvm

        if arch not in tvm.list_models(module=tvm):
            raise ValueError(
                f"unknown classifier {arch!r}: not efficientnet_lite0, not a torchvision "
                "classification model, not a checkpoint file"
            )
        model = tvm.get_model(arch, weights=None, num_classes=num_classes)
    if state is not None:
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise ValueError(
                f"the weights do not fit {arch} with {num_classes} classes (pass the matching "
                f"classes file): {str(err)[:500]}"
            ) from err
    return model.eval()


def _guess_head(entry: dict[str, Any] | None) -> tuple[nn.Linear | None, list[str]]:
    """The checkpoint's guess head as an eval-mode Linear, and its class names."""
    if entry is None:
        return None, []
    w, b = entry["weight"], entry["bias"]
    if w.ndim != 2 or b.shape != (w.shape[0],) or len(entry["classes"]) != w.shape[0]:
        raise ValueError("the checkpoint's guess head does not match its class names")
    head = nn.Linear(w.shape[1], w.shape[0])
    head.load_state_dict({"weight": w, "bias": b})
    return head.eval(), list(entry["classes"])


def _head_size(state: dict[str, torch.Tensor]) -> int | None:
    # The last 2-D weight of a state dict is the final Linear's: its rows are the classes.
    mats = [v for k, v in state.items() if k.endswith("weight") and v.ndim == 2]
    return int(mats[-1].shape[0]) if mats else None


def _attention_source(ckpt: dict[str, Any], names: list[str]) -> ClassifierSource:
    """A checkpoint with an attention head: the Lite0 backbone and the head, no linear one."""
    if ckpt["arch"] != DEFAULT:
        raise ValueError(f"attention heads sit on {DEFAULT}, the checkpoint names {ckpt['arch']}")
    head = AttentionHead.from_spec(ckpt["head"])
    if head.classes != len(names):
        raise ValueError(f"the attention head has {head.classes} classes, the names {len(names)}")
    backbone = EfficientNetLite0(len(names))
    state = {k[len("features.") :]: v for k, v in ckpt["state_dict"].items()}
    try:
        backbone.features.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"the checkpoint's backbone does not fit Lite0: {str(err)[:300]}") from err
    model = AttentionClassifier(backbone.features, head, "features").eval()
    return ClassifierSource(
        model,
        ckpt["arch"],
        names,
        ckpt["input"],
        "features",
        list(ckpt.get("empty_classes", [])),
        list(ckpt.get("human_classes", [])),
        head_kind="attention",
    )


def build_classifier(
    name: str | Path = DEFAULT,
    *,
    weights: Path | None = None,
    classes: Path | None = None,
) -> ClassifierSource:
    """The classifier `name` as a ClassifierSource (model in eval mode).

    name: "efficientnet_lite0" (real ImageNet weights), a torchvision classification model name
        (random init unless `weights`), or the path of a project checkpoint.
    weights: a state dict for that architecture, or a project checkpoint.
    classes: a text file, one class name per line; sets the number of outputs of a torchvision
        model (and of Lite0 when `weights` are given). Without it: ImageNet's 1000 names, or
        the checkpoint's.

    >>> src = build_classifier("resnet50", weights=Path("resnet50.pth"))
    >>> logits, cam = src.model(torch.zeros(1, 3, *src.input.size))
    """
    loaded: Any = None
    if weights is not None:
        loaded = torch.load(Path(weights), map_location="cpu", weights_only=True)
    elif isinstance(name, Path) or (name not in _known_names() and Path(name).is_file()):
        weights, loaded = Path(name), torch.load(Path(name), map_location="cpu", weights_only=True)
        if not is_checkpoint(loaded):
            raise ValueError(
                f"{name}: a bare state dict needs an architecture name; pass it as "
                "weights= with the model's name"
            )
        name = DEFAULT
    name = str(name)

    if is_checkpoint(loaded):
        ckpt = _checked_checkpoint(loaded, Path(str(weights)))
        if name not in (DEFAULT, ckpt["arch"]):
            raise ValueError(f"{weights} holds a {ckpt['arch']}, not a {name}")
        names = read_classes(classes) if classes is not None else list(ckpt["classes"])
        if ckpt.get("head") is not None:
            return _attention_source(ckpt, names)
        model = _arch_model(ckpt["arch"], len(names), ckpt["state_dict"])
        cam, layer = cam_classifier(model)
        guess, guess_classes = _guess_head(ckpt.get("guess"))
        return ClassifierSource(
            cam,
            ckpt["arch"],
            names,
            ckpt["input"],
            layer,
            list(ckpt.get("empty_classes", [])),
            list(ckpt.get("human_classes", [])),
            guess,
            guess_classes,
        )

    if loaded is not None and not isinstance(loaded, dict):
        raise ValueError(f"{weights}: expected a state dict or a project checkpoint")
    if classes is not None:
        names = read_classes(classes)
    elif loaded is not None and (n := _head_size(loaded)) is not None and n != 1000:
        raise ValueError(f"{weights} has {n} outputs: pass classes= (a file of {n} names)")
    else:
        names = imagenet_classes()
    if name == DEFAULT and loaded is None and len(names) != 1000:
        raise ValueError(
            f"the ImageNet Lite0 has 1000 classes, the classes file {len(names)}: pass weights= "
            "(a checkpoint from `edge train`) for other classes"
        )
    model = _arch_model(name, len(names), loaded)
    cam, layer = cam_classifier(model)
    spec = LITE0_INPUT if name == DEFAULT else torchvision_input(name)
    return ClassifierSource(cam, name, names, spec, layer)
