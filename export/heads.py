"""Forward-only vector-Jacobian products for the modules a classifier head is made of.

A head runs on the globally pooled vector p [N,K]. For Grad-CAM we need dy_c/dp; autograd would
put a backward pass into the exported graph, so each supported module gets a "step": its
forward on [N,K] plus a function that maps dy/d(output) to dy/d(input) with ordinary tensor
operations (Linear: g W; an activation: g * f'(x); LayerNorm: its analytic VJP). Add a module
kind with :func:`register_step`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

# A head step: pooled-space input [N,K] -> (output [N,K'], VJP taking dy/doutput to dy/dinput).
Vjp = Callable[[torch.Tensor], torch.Tensor]
Step = Callable[[nn.Module, torch.Tensor], tuple[torch.Tensor, Vjp]]


class UnsupportedHead(ValueError):
    """The classifier's head cannot be differentiated with forward operations; says why."""


def _identity_step(m: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, Vjp]:
    return x, lambda g: g


def _flatten_step(m: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, Vjp]:
    # On the pooled [N,K] tensor, Flatten(1) (what heads use after a pool) changes nothing.
    return x, lambda g: g


def _linear_step(m: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, Vjp]:
    assert isinstance(m, nn.Linear)
    return F.linear(x, m.weight, m.bias), lambda g: g @ m.weight


def _batchnorm1d_step(m: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, Vjp]:
    assert isinstance(m, nn.BatchNorm1d) and m.running_var is not None
    scale = torch.rsqrt(m.running_var + m.eps)
    if m.weight is not None:
        scale = scale * m.weight
    y = (x - m.running_mean) * scale
    if m.bias is not None:
        y = y + m.bias
    return y, lambda g: g * scale


def _layernorm_step(m: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, Vjp]:
    # Also torchvision's LayerNorm2d (a LayerNorm subclass over channels): on the pooled
    # [N,C,1,1] tensor it normalises the C values, exactly what this does on [N,C].
    assert isinstance(m, nn.LayerNorm)
    if len(m.normalized_shape) != 1 or m.normalized_shape[0] != x.shape[1]:
        raise UnsupportedHead(
            f"LayerNorm{tuple(m.normalized_shape)} must normalise the {x.shape[1]} pooled channels"
        )
    mu = x.mean(dim=1, keepdim=True)
    xc = x - mu
    inv = torch.rsqrt((xc * xc).mean(dim=1, keepdim=True) + m.eps)
    xhat = xc * inv
    y = xhat
    if m.weight is not None:
        y = y * m.weight
    if m.bias is not None:
        y = y + m.bias

    def vjp(g: torch.Tensor) -> torch.Tensor:
        gh = g * m.weight if m.weight is not None else g
        return inv * (
            gh - gh.mean(dim=1, keepdim=True) - xhat * (gh * xhat).mean(dim=1, keepdim=True)
        )

    return y, vjp


def _relu_step(m: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, Vjp]:
    y = torch.relu(x)
    return y, lambda g: g * (y > 0).to(g.dtype)


def _hardtanh_step(m: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, Vjp]:
    # ReLU6 is a Hardtanh(0, 6); torch's gradient is 1 strictly inside the bounds.
    assert isinstance(m, nn.Hardtanh)
    lo, hi = m.min_val, m.max_val
    y = torch.clamp(x, lo, hi)
    return y, lambda g: g * ((x > lo) & (x < hi)).to(g.dtype)


def _hardswish_step(m: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, Vjp]:
    # d/dx x*relu6(x+3)/6 = 0 below -3, x/3 + 1/2 on [-3, 3], 1 above (torch's convention).
    d = torch.where(x < -3.0, torch.zeros_like(x), torch.where(x <= 3.0, x / 3.0 + 0.5, 1.0))
    return F.hardswish(x), lambda g: g * d


def _silu_step(m: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, Vjp]:
    s = torch.sigmoid(x)
    return x * s, lambda g: g * (s * (1.0 + x * (1.0 - s)))


def _sigmoid_step(m: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, Vjp]:
    s = torch.sigmoid(x)
    return s, lambda g: g * (s * (1.0 - s))


def _tanh_step(m: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, Vjp]:
    t = torch.tanh(x)
    return t, lambda g: g * (1.0 - t * t)


def _gelu_step(m: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, Vjp]:
    cdf = 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))
    pdf = torch.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    return x * cdf, lambda g: g * (cdf + x * pdf)


def _dropout_step(m: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, Vjp]:
    # Grad-CAM is taken in eval mode, where dropout is the identity.
    return x, lambda g: g


# Exact types first in lookup order; subclasses (LayerNorm2d, ReLU6) are found by isinstance.
STEPS: dict[type[nn.Module], Step] = {
    nn.Identity: _identity_step,
    nn.Flatten: _flatten_step,
    nn.Linear: _linear_step,
    nn.BatchNorm1d: _batchnorm1d_step,
    nn.LayerNorm: _layernorm_step,
    nn.ReLU: _relu_step,
    nn.Hardtanh: _hardtanh_step,
    nn.Hardswish: _hardswish_step,
    nn.SiLU: _silu_step,
    nn.Sigmoid: _sigmoid_step,
    nn.Tanh: _tanh_step,
    nn.GELU: _gelu_step,
    nn.Dropout: _dropout_step,
    nn.AlphaDropout: _dropout_step,
}

WHY_NOT = {
    nn.Softmax: "the head must end in raw logits, not probabilities",
    nn.LogSoftmax: "the head must end in raw logits, not log-probabilities",
}


def _refusal(m: nn.Module) -> str | None:
    """Why a module of a supported kind still cannot be handled, from its settings."""
    if isinstance(m, nn.Flatten) and (m.start_dim not in (1, -1) or m.end_dim != -1):
        return (
            f"Flatten(start_dim={m.start_dim}, end_dim={m.end_dim}): only Flatten(1) after "
            "the pool is supported"
        )
    if isinstance(m, nn.BatchNorm1d) and m.running_var is None:
        return (
            "BatchNorm1d without running statistics normalises over the batch, so one "
            "image's gradient depends on the others"
        )
    if isinstance(m, nn.GELU) and m.approximate != "none":
        return f"GELU(approximate={m.approximate!r}): only the exact erf GELU is supported"
    return None


def step_for(m: nn.Module) -> Step:
    """The step of a head module, or UnsupportedHead naming the module and why."""
    why = _refusal(m)
    if why is not None:
        raise UnsupportedHead(f"head module {type(m).__name__}: {why}")
    for kind, step in STEPS.items():
        if isinstance(m, kind):
            return step
    why = next((w for kind, w in WHY_NOT.items() if isinstance(m, kind)), None)
    supported = ", ".join(k.__name__ for k in STEPS)
    raise UnsupportedHead(
        f"head module {m!r} ({type(m).__name__}): "
        + (why or "no forward-only vector-Jacobian product is defined for it")
        + f"; supported after the global average pool: {supported}, and nn.Sequential of them"
    )


def head_chain(head: nn.Module) -> list[nn.Module]:
    """The head as a flat list of supported modules (Sequentials unrolled), or UnsupportedHead."""
    if isinstance(head, nn.Sequential):
        return [m for child in head for m in head_chain(child)]
    step_for(head)
    return [head]


def register_step(kind: type[nn.Module], step: Step) -> None:
    """Teach CamClassifier a new head module kind; it takes precedence over earlier ones, so a
    subclass of a known module can get its own step."""
    rest = {k: v for k, v in STEPS.items() if k is not kind}
    STEPS.clear()
    STEPS.update({kind: step, **rest})
