"""An attention-pooling head: a second map source beside Grad-CAM, exact and forward-only.

On the backbone's last feature map A [N,K,h,w] (WS-DAN-style bilinear attention pooling):

- M attention maps ``a_m = softmax over space of (1x1 conv of A)``, [N,M,h,w], each summing to 1;
- ``pooled_m = sum_xy a_m(xy) A(xy)``, [N,M,K];
- ``logits = sum_m W_m . pooled_m + b`` (one Linear on the flattened [N,M*K]).

Because the head is linear in A once the attention is fixed, each logit splits over space
exactly: ``logit_c = sum_xy sum_m a_m(xy) W_{c,m} . A(xy) + b_c``. So the class map of the top
class needs no gradient: ``cam_c(xy) = ReLU(sum_m a_m(xy) W_{c,m} . A(xy))`` (the same meaning
as the linear head's CAM: where the logit comes from). The attention map is ``sum_m a_m``
divided by its peak, so each frame's map lies in (0, 1] with its maximum at 1: where the head
looks, whatever the class.

The head trains in torch on cached feature maps (the backbone stays frozen), see
:func:`export.train_head.train_attention_head`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

HEAD_KIND = "attention"
DEFAULT_MAPS = 4


class AttentionHead(nn.Module):
    """A [N,K,h,w] -> logits [N,C], and (with :meth:`maps`) the class and attention maps."""

    def __init__(self, channels: int, classes: int, maps: int = DEFAULT_MAPS, dropout: float = 0.0):
        super().__init__()
        self.channels, self.classes, self.n_maps = channels, classes, maps
        self.attend = nn.Conv2d(channels, maps, 1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(maps * channels, classes)

    def attention(self, a: torch.Tensor) -> torch.Tensor:
        """The M spatial softmaxes [N,M,h*w], each row summing to 1."""
        return torch.softmax(self.attend(a).flatten(2), dim=-1)

    def pooled(self, a: torch.Tensor, att: torch.Tensor) -> torch.Tensor:
        """sum_xy a_m(xy) A(xy): [N,M,K]."""
        return torch.matmul(att, a.flatten(2).transpose(1, 2))

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        att = self.attention(a)
        return self.fc(self.dropout(self.pooled(a, att).flatten(1)))

    def class_maps(self, a: torch.Tensor, att: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """sum_m a_m(xy) W_{c,m} . A(xy) for class `classes[i]` of frame i, before the ReLU:
        [N,h,w]; its sum over space plus b_c is logit c."""
        n, k, h, w = a.shape
        wc = self.fc.weight[classes].reshape(n, self.n_maps, k)  # [N,M,K]
        proj = torch.matmul(wc, a.flatten(2))  # [N,M,h*w]
        return (att * proj).sum(dim=1).reshape(n, h, w)

    def maps(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits [N,C], cam [N,h,w] of the top class, >= 0, attention [N,h,w] in (0, 1])."""
        n, _, h, w = a.shape
        att = self.attention(a)
        logits = self.fc(self.pooled(a, att).flatten(1))
        cam = torch.relu(self.class_maps(a, att, logits.argmax(dim=1)))
        total = att.sum(dim=1)
        attention = total / total.amax(dim=1, keepdim=True)
        return logits, cam, attention.reshape(n, h, w)

    def spec(self) -> dict[str, Any]:
        """What a checkpoint keeps to rebuild the head (beside its state dict)."""
        return {
            "kind": HEAD_KIND,
            "channels": self.channels,
            "classes": self.classes,
            "maps": self.n_maps,
        }

    @classmethod
    def from_spec(cls, entry: dict[str, Any]) -> AttentionHead:
        """The head a checkpoint's `head` entry describes, with its weights, in eval mode."""
        if entry.get("kind") != HEAD_KIND:
            raise ValueError(f"not an attention head: kind {entry.get('kind')!r}")
        head = cls(int(entry["channels"]), int(entry["classes"]), int(entry["maps"]))
        head.load_state_dict(entry["state_dict"], strict=True)
        return head.eval()


class AttentionClassifier(nn.Module):
    """`features` -> A; the attention head -> (logits, cam, attention), all forward ops.

    Duck-types :class:`export.cam.CamClassifier` for export (`features`, `cam_layer`,
    `from_features`), with `attention` as a third output."""

    outputs = ("logits", "cam", "attention")

    def __init__(self, features: nn.Module, head: AttentionHead, cam_layer: str) -> None:
        super().__init__()
        self.features = features
        self.head = head
        self.cam_layer = cam_layer

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.from_features(self.features(x))

    def from_features(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.head.maps(a)
