"""Execution providers, chosen in one place: which ones to try, in what order, with what options.

A device may list TensorRT or CUDA and still be unable to use them (no driver, out of GPU
memory, an engine that fails to build, an operator that fails on the first run). So a session
is opened by trying each provider in order and keeping the first one that both creates the
session *and* runs a probe batch; CPU always closes the list. Every skip is logged with its
reason (logger ``edge.providers``), so the operator sees why the device is slower than hoped.

The order comes from, first to last: the caller (a ``--providers`` option), the environment
variable ``OVERMAP_PROVIDERS`` (e.g. ``CUDA,CPU``), the bundle, the default (TensorRT, CUDA,
CPU). Names may be short (``trt``, ``cuda``, ``cpu``) or ONNX Runtime's full names.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

log = logging.getLogger("edge.providers")

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
DEFAULT_ORDER = (TENSORRT, CUDA, CPU)
# what a bundle exported for each target lists in its manifest (the device's `fallback`)
TARGET_ORDER: dict[str, tuple[str, ...]] = {
    "cpu": (CPU,),
    "cuda": DEFAULT_ORDER,
    "jetson": DEFAULT_ORDER,
}
ENV = "OVERMAP_PROVIDERS"
TRT_CACHE = "trt_cache"  # engine cache folder, next to the model

SHORT_NAMES = {
    "trt": TENSORRT,
    "tensorrt": TENSORRT,
    "cuda": CUDA,
    "gpu": CUDA,
    "cpu": CPU,
    "openvino": "OpenVINOExecutionProvider",
    "dml": "DmlExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "rocm": "ROCMExecutionProvider",
}


class ProviderError(ValueError):
    """A provider name that ONNX Runtime does not know; the message lists the valid ones."""


def available_providers() -> list[str]:
    """Providers this ONNX Runtime build can use, best first (as ORT reports them)."""
    return list(ort.get_available_providers())


def resolve_name(name: str) -> str:
    """`"cuda"` -> `"CUDAExecutionProvider"`; a full ORT name is kept; anything else is refused.

    Raises :class:`ProviderError` naming the valid choices, so a typo in ``--providers`` or
    ``OVERMAP_PROVIDERS`` is caught at start, not silently ignored.
    """
    key = name.strip()
    if key.lower() in SHORT_NAMES:
        return SHORT_NAMES[key.lower()]
    known = {p.lower(): p for p in ort.get_all_providers()}
    for candidate in (key.lower(), f"{key.lower()}executionprovider"):
        if candidate in known:
            return known[candidate]
    short = ", ".join(sorted({"trt", "cuda", "cpu"}))
    raise ProviderError(
        f"unknown execution provider {name!r}; use one of {short} or an ONNX Runtime name"
        f" ({', '.join(DEFAULT_ORDER)}, ...)"
    )


def parse_providers(text: str) -> list[str]:
    """Parse ``"TRT, cuda,CPU"`` (the env var / ``--providers`` form) into full names."""
    names = [part for part in text.replace(";", ",").split(",") if part.strip()]
    if not names:
        raise ProviderError(f"empty provider list {text!r}; e.g. {ENV}=CUDA,CPU")
    return [resolve_name(n) for n in names]


def provider_order(
    preferred: Sequence[str] | None = None,
    *,
    fallback: Sequence[str] | None = None,
    available: Sequence[str] | None = None,
) -> list[str]:
    """The providers to try, in order: only available ones, no repeats, CPU last.

    `preferred` (the caller's choice) wins; else ``$OVERMAP_PROVIDERS``; else `fallback`
    (e.g. the bundle's list); else TensorRT, CUDA, CPU. Requested providers that this build
    lacks are dropped with a warning; unknown names raise :class:`ProviderError`.
    """
    env = os.environ.get(ENV, "").strip()
    if preferred is not None:
        wanted, source = [resolve_name(p) for p in preferred], "requested"
    elif env:
        wanted, source = parse_providers(env), f"${ENV}"
    elif fallback:
        wanted, source = [resolve_name(p) for p in fallback], "bundle"
    else:
        wanted, source = list(DEFAULT_ORDER), "default"
    have = set(available if available is not None else available_providers())
    order: list[str] = []
    for name in wanted:
        if name in order:
            continue
        if name not in have and name != CPU:
            if source != "default":
                log.warning(
                    "%s provider %s is not in this onnxruntime build; skipped", source, name
                )
            continue
        order.append(name)
    if CPU not in order:
        order.append(CPU)
    return order


def target_providers(target: str) -> list[str]:
    """The providers a bundle for `target` ("cpu", "cuda", "jetson") asks for, best first.

    The exporter writes this into the manifest; kept here so the device's default order and
    the bundle's can never drift apart."""
    try:
        return list(TARGET_ORDER[target])
    except KeyError:
        raise ProviderError(
            f"unknown bundle target {target!r}; one of {', '.join(TARGET_ORDER)}"
        ) from None


def default_threads() -> int:
    """All cores this process may run on (respects CPU affinity and container limits)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def provider_options(
    name: str,
    model: Path,
    *,
    precision: str = "fp32",
    input_name: str = "image",
    probe: np.ndarray | None = None,
    max_batch: int = 32,
) -> dict[str, Any]:
    """Options for one provider. TensorRT: an engine cache beside the model (building an
    engine takes minutes on a Jetson, so it must survive restarts), fp16/int8 by the bundle's
    precision, and a batch profile 1..max_batch so a new batch size does not rebuild it."""
    if name != TENSORRT:
        return {}
    opts: dict[str, Any] = {
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(model.parent / TRT_CACHE),
        "trt_fp16_enable": precision in ("fp16", "int8"),
        "trt_int8_enable": precision == "int8",
    }
    if probe is not None:
        dims = "x".join(str(d) for d in probe.shape[1:])
        opt = min(8, max_batch)
        opts |= {
            "trt_profile_min_shapes": f"{input_name}:1x{dims}",
            "trt_profile_opt_shapes": f"{input_name}:{opt}x{dims}",
            "trt_profile_max_shapes": f"{input_name}:{max_batch}x{dims}",
        }
    return opts


@dataclass
class OpenedSession:
    """A session that created and ran its probe, the provider doing it, and why earlier
    providers were skipped (provider -> reason), for the log and the status screen."""

    session: ort.InferenceSession
    provider: str
    skipped: dict[str, str] = field(default_factory=dict)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".strip().rstrip(":")


def open_session(
    path: str | Path,
    providers: Sequence[str],
    *,
    probe: np.ndarray | None = None,
    threads: int | None = None,
    precision: str = "fp32",
    max_batch: int = 32,
    check: Callable[[ort.InferenceSession], None] | None = None,
) -> OpenedSession:
    """Open `path` with the first provider in `providers` (CPU appended) that works.

    A provider is skipped when creating the session raises, when ONNX Runtime silently put a
    different provider first (e.g. CUDA asked of a CPU-only build), or when the first run on
    `probe` raises. `check(session)` runs before the probe; its errors are about the model,
    not the provider, so they propagate instead of falling back. `threads` sets
    intra_op_num_threads (default: all cores). Raises RuntimeError naming the file and every
    provider's reason when none works.
    """
    path = Path(path)
    order = [resolve_name(p) for p in providers]
    order = list(dict.fromkeys(order + [CPU]))
    skipped: dict[str, str] = {}
    for i, name in enumerate(order):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or default_threads()
        opts.log_severity_level = 3  # our own log says what fell back and why
        chain = [
            (p, provider_options(p, path, precision=precision, probe=probe, max_batch=max_batch))
            for p in order[i:]
        ]
        try:
            with warnings.catch_warnings():  # ORT warns of a missing provider; we log it below
                warnings.simplefilter("ignore", UserWarning)
                session = ort.InferenceSession(str(path), sess_options=opts, providers=chain)
        except Exception as e:  # noqa: BLE001 - any failure means: try the next provider
            skipped[name] = f"session creation failed ({_first_line(e)})"
            log.warning("%s: %s skipped: %s", path.name, name, skipped[name])
            continue
        first = session.get_providers()[0]
        if first != name:
            skipped[name] = f"not usable here, onnxruntime fell back to {first}"
            log.warning("%s: %s skipped: %s", path.name, name, skipped[name])
            continue
        if check is not None:
            check(session)
        if probe is not None:
            try:
                session.run(None, {session.get_inputs()[0].name: probe})
            except Exception as e:  # noqa: BLE001
                skipped[name] = f"first run failed ({_first_line(e)})"
                log.warning("%s: %s skipped: %s", path.name, name, skipped[name])
                continue
        why = "; ".join(f"{p}: {r}" for p, r in skipped.items())
        log.info("%s: using %s%s", path.name, name, f" (skipped {why})" if why else "")
        return OpenedSession(session, name, skipped)
    reasons = "; ".join(f"{p}: {r}" for p, r in skipped.items())
    raise RuntimeError(f"{path}: no execution provider could run this model ({reasons})")
