"""Segmenters for the bundle: image -> class-agnostic animal foreground probability.

Over-MAP needs to know where the animal is, whatever its species, so every segmenter enters the
bundle through one small interface, :func:`build_segmenter`, which returns a
:class:`SegmenterSource`: a torch module mapping a normalised image [N,3,H,W] to a foreground
probability [N,1,h,w] in 0..1, plus the input spec it wants and its output size.

Kinds:
- "lite0_seg" (default): a small decoder on the frozen ImageNet EfficientNet-Lite0 backbone,
  the same backbone the classifier uses, trained on Oxford-IIIT Pet trimaps
  (`python -m export.train_segmenter`). Output at stride 8. Only the head's weights are stored.
- torchvision semantic segmenters (`lraspp_mobilenet_v3_large`, `deeplabv3_*`, `fcn_*`) with a
  state-dict file; foreground = 1 - P(background), background being class 0 (VOC order).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from edge.bundle import InputSpec
from export import lite0

DEFAULT_NAME = "lite0_seg"
WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_HEAD_WEIGHTS = WEIGHTS_DIR / "lite0_seg_head.pt"
DEFAULT_SIZE = (224, 224)

# torchvision's segmenters were trained on 0..1 pixels with ImageNet mean/std; scaled to 0..255.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
TORCHVISION_PREFIXES = ("lraspp_", "deeplabv3_", "fcn_")

# Lite0 blocks whose outputs the head reads: stride 8 (40 ch), stride 16 (112 ch); plus the
# 1280-channel head conv at stride 32, the classifier's own map layer.
TAP_BLOCKS = (4, 10)
TAP_CHANNELS = (40, 112, 1280)


class SegmenterError(ValueError):
    """A segmenter that cannot be built: unknown name or unusable weights; says what to do."""


@dataclass
class SegmenterSource:
    """A segmenter ready for export: `model` maps image [N,3,H,W] -> foreground [N,1,h,w]."""

    model: nn.Module
    name: str
    input: InputSpec
    output_size: Callable[[int, int], tuple[int, int]]


# --------------------------------------------------------------------------- lite0_seg


def lite0_taps(
    features: lite0.Lite0Features, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run the Lite0 backbone once, keeping the stride-8, stride-16 and stride-32 maps.

    Shared by the model and by training's feature cache, so both see exactly the same tensors.
    """
    y = F.relu6(features._bn0(features._conv_stem(x)))
    taps = []
    for i, block in enumerate(features._blocks):
        y = block(y)
        if i in TAP_BLOCKS:
            taps.append(y)
    deep = F.relu6(features._bn1(features._conv_head(y)))
    return taps[0], taps[1], deep


def _cbr(cin: int, cout: int, k: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class Lite0SegHead(nn.Module):
    """A small LR-ASPP-like decoder: deep semantics gated by global context, refined top-down
    with the stride-16 and stride-8 maps; returns foreground logits at stride 8.

    About 0.1 M parameters and a few MFLOPs at 224 px: far below the backbone's cost.
    """

    def __init__(self, width: int = 64, fine: int = 32) -> None:
        super().__init__()
        c8, c16, c32 = TAP_CHANNELS
        self.deep = _cbr(c32, width)
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c32, width, 1), nn.Sigmoid())
        self.lat16 = _cbr(c16, width)
        self.mix16 = nn.Sequential(_cbr(width, width, 3, groups=width), _cbr(width, width))
        self.lat8 = _cbr(c8, fine)
        self.mix8 = nn.Sequential(
            _cbr(width + fine, width + fine, 3, groups=width + fine), _cbr(width + fine, fine)
        )
        self.out = nn.Conv2d(fine, 1, 1)

    def forward(self, f8: torch.Tensor, f16: torch.Tensor, f32: torch.Tensor) -> torch.Tensor:
        y = self.deep(f32) * self.gate(f32)
        y = F.interpolate(y, size=f16.shape[-2:], mode="bilinear", align_corners=False)
        y = self.mix16(y + self.lat16(f16))
        y = F.interpolate(y, size=f8.shape[-2:], mode="bilinear", align_corners=False)
        y = self.mix8(torch.cat([y, self.lat8(f8)], dim=1))
        return self.out(y)


class Lite0Seg(nn.Module):
    """Frozen ImageNet Lite0 backbone + :class:`Lite0SegHead` -> sigmoid probability."""

    def __init__(self, features: lite0.Lite0Features, head: Lite0SegHead) -> None:
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.head(*lite0_taps(self.features, x)))


def lite0_output_size(h: int, w: int) -> tuple[int, int]:
    """Stride 8 with TensorFlow SAME padding: each stride-2 step rounds up."""
    for _ in range(3):
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    return h, w


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise SegmenterError(f"{path}: segmenter weights file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds for a file that is not a checkpoint
        raise SegmenterError(f"{path}: not a readable torch state dict ({e})") from e
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SegmenterError(f"{path}: expected a state dict (parameter name -> tensor)")
    return state


def _load_into(model: nn.Module, state: dict[str, torch.Tensor], path: Path, what: str) -> None:
    """load_state_dict, but with an error that names the file and the first mismatches."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys (e.g. {unexpected[:3]})")
        if wrong:
            parts.append(f"wrong shapes (file vs model): {wrong[:3]}")
        raise SegmenterError(
            f"{path}: these weights do not fit {what}: "
            + "; ".join(parts)
            + ". Pass the weights file that was trained for this segmenter name."
        )
    model.load_state_dict(state, strict=True)


def _build_lite0_seg(weights: Path | None, spec: InputSpec | None) -> SegmenterSource:
    path = Path(weights) if weights is not None else DEFAULT_HEAD_WEIGHTS
    head = Lite0SegHead()
    _load_into(head, _load_state(path), path, "the lite0_seg head")
    model = Lite0Seg(lite0.load_imagenet_lite0().features, head).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    spec = spec or InputSpec(size=DEFAULT_SIZE, mean=lite0.MEAN, std=lite0.STD, resize="stretch")
    return SegmenterSource(model, DEFAULT_NAME, spec, lite0_output_size)


# --------------------------------------------------------------------------- torchvision


class BackgroundComplement(nn.Module):
    """Wrap a torchvision segmenter (dict output "out": [N,C,H,W] logits) -> 1 - P(class 0)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)["out"]
        return 1.0 - torch.softmax(logits, dim=1)[:, :1]


def _num_classes(state: dict[str, torch.Tensor]) -> int:
    """The class count a torchvision segmentation state dict was trained with."""
    for key in ("classifier.high_classifier.weight", "classifier.4.weight"):
        if key in state:
            return int(state[key].shape[0])
    return 21


def _build_torchvision(name: str, weights: Path | None, spec: InputSpec | None) -> SegmenterSource:
    import torchvision

    if name not in torchvision.models.list_models(module=torchvision.models.segmentation):
        known = torchvision.models.list_models(module=torchvision.models.segmentation)
        raise SegmenterError(f"unknown torchvision segmenter {name!r}; known: {known}")
    state = _load_state(weights) if weights is not None else None
    num_classes = _num_classes(state) if state is not None else 21
    aux = state is not None and any(k.startswith("aux_classifier.") for k in state)
    kwargs = {"aux_loss": True} if aux else {}
    net = torchvision.models.get_model(
        name, weights=None, weights_backbone=None, num_classes=num_classes, **kwargs
    )
    if state is not None:
        assert weights is not None
        _load_into(net, state, Path(weights), f"torchvision {name} ({num_classes} classes)")
    model = BackgroundComplement(net).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    spec = spec or InputSpec(
        size=DEFAULT_SIZE, mean=IMAGENET_MEAN, std=IMAGENET_STD, resize="stretch"
    )
    return SegmenterSource(model, name, spec, lambda h, w: (h, w))


# --------------------------------------------------------------------------- public API


def build_segmenter(
    name: str = DEFAULT_NAME, *, weights: Path | None = None, input: InputSpec | None = None
) -> SegmenterSource:
    """Build a segmenter by name, in eval mode with frozen parameters.

    Args:
        name: "lite0_seg" (default), or a torchvision segmentation model name
            (lraspp_mobilenet_v3_large, deeplabv3_*, fcn_*).
        weights: a state-dict file. For "lite0_seg", the head's weights (default: the committed
            `export/weights/lite0_seg_head.pt`). For torchvision, the full model's weights
            (class 0 must be background); None gives random weights, useful only for tests.
        input: replaces the default input spec (224x224, stretch, the normalisation the weights
            were trained with); keep mean/std as the weights expect.

    Raises:
        SegmenterError: unknown name, missing or unfit weights file.

    Example:
        >>> src = build_segmenter()
        >>> src.output_size(224, 224)
        (28, 28)
    """
    if name == DEFAULT_NAME:
        return _build_lite0_seg(weights, input)
    if name.startswith(TORCHVISION_PREFIXES):
        return _build_torchvision(name, weights, input)
    raise SegmenterError(
        f"unknown segmenter {name!r}; use {DEFAULT_NAME!r} or a torchvision model "
        "(lraspp_mobilenet_v3_large, deeplabv3_*, fcn_*)"
    )


def export_segmenter_onnx(
    src: SegmenterSource, path: Path, size: tuple[int, int], opset: int = 17
) -> Path:
    """Write `src.model` as ONNX: input `image` [N,3,H,W] -> `foreground` [N,1,h,w].

    The batch is dynamic; H, W are fixed to `size` (the bundle's input size), which keeps the
    graph simple for TensorRT and quantization. The classic TorchScript exporter is used, as
    for the classifier (export/onnx_io.py). The file is checked with onnx.checker.
    """
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = size
    model = src.model.eval()
    dummy = torch.zeros(2, 3, h, w)
    with torch.no_grad(), warnings.catch_warnings():
        # The classic exporter's deprecation notes, and tracer notes on Lite0's SAME padding
        # (it reads the input size, a constant here since H and W are fixed).
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (dummy,),
            str(path),
            input_names=["image"],
            output_names=["foreground"],
            dynamic_axes={"image": {0: "batch"}, "foreground": {0: "batch"}},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    # The tracer leaves h, w symbolic (they come from shapes); write the fixed values.
    proto = onnx.load(str(path))
    oh, ow = src.output_size(h, w)
    dims = proto.graph.output[0].type.tensor_type.shape.dim
    for dim, value in zip(dims[1:], (1, oh, ow), strict=True):
        dim.Clear()
        dim.dim_value = value
    onnx.save(proto, str(path))
    onnx.checker.check_model(str(path), full_check=True)
    return path
