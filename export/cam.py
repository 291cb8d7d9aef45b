"""A classifier that also returns its Grad-CAM map, computed with forward operations only.

Grad-CAM at the last convolutional block A (shape [K,h,w]) weights each channel by the mean
gradient of the top logit y_c: alpha_k = mean_ij dy_c/dA_kij, cam = ReLU(sum_k alpha_k A_k).
When the head is global-average-pool then Linear, dy_c/dA_kij = w[c,k] / (h*w) everywhere, so
cam = ReLU(sum_k w[c,k] A_k) / (h*w): the class activation map, already in the forward pass.
Exporting this module to ONNX gives a graph with outputs `logits` and `cam` and no backward pass.
"""

from __future__ import annotations

import torch
from torch import nn


class UnsupportedHead(ValueError):
    """The classifier's head cannot be differentiated with forward operations; says why."""


class CamClassifier(nn.Module):
    """`features` -> A [N,K,h,w]; pooled -> `head` -> logits; cam of the top class from A."""

    def __init__(self, features: nn.Module, head: nn.Linear, cam_layer: str) -> None:
        super().__init__()
        if not isinstance(head, nn.Linear):
            raise UnsupportedHead(f"head {type(head).__name__} is not a Linear layer")
        self.features = features
        self.head = head
        self.cam_layer = cam_layer

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.features(x)
        logits = self.head(a.mean(dim=(2, 3)))
        top = logits.argmax(dim=1)
        alpha = self.head.weight[top] / (a.shape[2] * a.shape[3])  # [N,K]
        cam = torch.relu(torch.einsum("nk,nkhw->nhw", alpha, a))
        return logits, cam
