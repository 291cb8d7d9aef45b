"""One backbone pass for both models when the segmenter sits on the classifier's backbone.

The default segmenter is a small head on the frozen ImageNet Lite0 backbone, and the default
classifier (or one from `edge train`, whose backbone is frozen too) runs that same backbone on
the same input. Running it twice on the device is pure waste: this module computes the
backbone once and returns `logits`, `cam` and `foreground` from one graph, which the device
then runs alone (manifest: segmenter.in_classifier).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from export.attention import AttentionClassifier
from export.cam import CamClassifier
from export.lite0 import Lite0Features
from export.models import ClassifierSource
from export.onnx_io import export_classifier_onnx
from export.segmenter import Lite0Seg, SegmenterSource, lite0_taps


class JointLite0(nn.Module):
    """image -> (logits, cam[, attention], foreground[, guess]), the backbone computed once.

    `attention`: when the classifier is an attention head (export.attention), its map.

    `guess`: a second linear head on the same pooled features (the ImageNet classifier beside a
    camera-trap head), whose logits name a species guess at the cost of one small matmul."""

    def __init__(
        self,
        classifier: CamClassifier | AttentionClassifier,
        segmenter: Lite0Seg,
        guess: nn.Linear | None = None,
    ) -> None:
        super().__init__()
        self.classifier = classifier
        self.seg_head = segmenter.head
        self.guess = guess

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        f8, f16, deep = lite0_taps(self.classifier.features, x)
        maps = self.classifier.from_features(deep)  # (logits, cam[, attention])
        fg = torch.sigmoid(self.seg_head(f8, f16, deep))
        pooled = deep.mean(dim=(2, 3))
        # `features` and `fmap` let the device fit and apply a new linear head (learning from
        # a person's answers) with numpy alone: logits = features @ W.T + b, and the head's
        # Grad-CAM is ReLU(sum_k W[c,k] fmap_k) / (h*w), as in export.cam
        guess = () if self.guess is None else (self.guess(pooled),)
        return *maps, fg, *guess, pooled, deep


def shares_backbone(clf: ClassifierSource, seg: SegmenterSource) -> bool:
    """True when the segmenter's backbone is the classifier's, weight for weight, same input."""
    a, b = clf.model.features, getattr(seg.model, "features", None)
    if not (isinstance(a, Lite0Features) and isinstance(seg.model, Lite0Seg)):
        return False
    if clf.input != seg.input:
        return False
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def export_joint_onnx(model: JointLite0, path: Path, size: tuple[int, int]) -> Path:
    """The classifier's ONNX export with the outputs `foreground` [N,1,h,w], `guess` [N,G]
    (when the model has a guess head), `features` [N,K] and `fmap` [N,K,h,w] added."""
    names = (
        *getattr(model.classifier, "outputs", ("logits", "cam")),
        "foreground",
        *(("guess",) if model.guess is not None else ()),
        "features",
        "fmap",
    )
    return export_classifier_onnx(model, path, size, outputs=names)  # type: ignore[arg-type]
