"""A classifier that also returns its Grad-CAM map, computed with forward operations only.

Grad-CAM at the last convolutional block A (shape [K,h,w]) weights each channel by the mean
gradient of the top logit y_c: alpha_k = mean_ij dy_c/dA_kij, cam = ReLU(sum_k alpha_k A_k).
When the head is global-average-pool then a chain of modules on the pooled vector p, every
dy_c/dA_kij equals (dy_c/dp_k) / (h*w), so alpha = (dy_c/dp) / (h*w). We get dy_c/dp with
hand-written vector-Jacobian products through the chain (Linear: g <- g W; an activation:
g <- g * f'(x); LayerNorm: its analytic VJP), all ordinary forward operations. Exporting this
module to ONNX thus gives a graph with outputs `logits` and `cam` and no backward pass.

For the common head (pool, then Linear) this is the class activation map
ReLU(sum_k w[c,k] A_k) / (h*w), already in the forward pass.
"""

from __future__ import annotations

import torch
from torch import nn

from export.heads import UnsupportedHead, Vjp, head_chain, step_for

__all__ = ["CamClassifier", "UnsupportedHead"]


class CamClassifier(nn.Module):
    """`features` -> A [N,K,h,w]; global average pool -> `head` -> logits [N,C]; Grad-CAM of
    the top class from A -> cam [N,h,w] (>= 0, before upsampling).

    `head` is a Linear or a chain (nn.Sequential) of the modules in STEPS, applied to the pooled
    [N,K] vector. `cam_layer` names A's layer in the source model (for the manifest)."""

    def __init__(self, features: nn.Module, head: nn.Module, cam_layer: str) -> None:
        super().__init__()
        self.chain = head_chain(head)  # raises UnsupportedHead before anything is built
        self._steps = [step_for(m) for m in self.chain]
        self.features = features
        self.head = head
        self.cam_layer = cam_layer

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.from_features(self.features(x))

    def from_features(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, cam) from the map's layer A [N,K,h,w] (for graphs that share A)."""
        v = a.mean(dim=(2, 3))
        vjps: list[Vjp] = []
        for m, step in zip(self.chain, self._steps, strict=True):
            v, vjp = step(m, v)
            vjps.append(vjp)
        logits = v
        top = logits.argmax(dim=1)
        last = len(self.chain) - 1
        if isinstance(self.chain[-1], nn.Linear):
            g = self.chain[-1].weight[top]  # = one-hot(top) @ W, a gather instead of a matmul
            last -= 1
        else:
            classes = torch.arange(logits.shape[1], device=logits.device)
            g = (classes[None, :] == top[:, None]).to(logits.dtype)
        for i in range(last, -1, -1):
            g = vjps[i](g)
        alpha = g / (a.shape[2] * a.shape[3])  # [N,K]: dy/dA_kij is the same at every (i, j)
        # Mul + ReduceSum rather than Einsum: the plainest ops for every runtime (TensorRT too).
        cam = torch.relu((alpha[:, :, None, None] * a).sum(dim=1))
        return logits, cam
