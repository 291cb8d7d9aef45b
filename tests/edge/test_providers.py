"""Provider choice and fallback, with real ONNX Runtime sessions on this (CPU-only) machine.

A GPU provider failing is simulated by wrapping `onnxruntime.InferenceSession` so that asking
for one provider raises (at creation, or at the first run) while the others still build real
sessions; asking for CUDA of this CPU-only build is a real silent fallback.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from edge import providers as P

ALL_THREE = [P.TENSORRT, P.CUDA, P.CPU]


@pytest.fixture
def model(tiny_bundle: Path) -> Path:
    return tiny_bundle / "classifier.onnx"


@pytest.fixture
def probe() -> np.ndarray:
    return np.zeros((1, 3, 64, 64), np.float32)


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(P.ENV, raising=False)


class _FirstRunFails:
    """A real CPU session that claims `name` and whose runs raise, like a GPU kernel failing."""

    def __init__(self, inner: ort.InferenceSession, name: str) -> None:
        self.inner, self.name = inner, name

    def get_providers(self) -> list[str]:
        return [self.name, P.CPU]

    def get_inputs(self) -> Any:
        return self.inner.get_inputs()

    def run(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("CUDNN_STATUS_EXECUTION_FAILED\nstack trace ...")


def _patch(
    monkeypatch: pytest.MonkeyPatch,
    *,
    fail_create: Collection[str] = (),
    fail_run: Collection[str] = (),
) -> list[Any]:
    """Make ORT fail for some providers; return a list recording each creation's arguments."""
    real = ort.InferenceSession
    calls: list[Any] = []

    def fake(path: str, sess_options: Any = None, providers: Any = None) -> Any:
        first = providers[0][0]
        calls.append((first, sess_options, providers))
        if first in fail_create:
            raise RuntimeError(f"{first}: device not found\nmore detail")
        if first in fail_run:
            return _FirstRunFails(real(path, sess_options=sess_options, providers=[P.CPU]), first)
        if first != P.CPU:  # pretend the GPU provider works: a real CPU session claiming it
            inner = real(path, sess_options=sess_options, providers=[P.CPU])
            inner.get_providers = lambda: [first, P.CPU]  # type: ignore[method-assign]
            return inner
        return real(path, sess_options=sess_options, providers=providers)

    monkeypatch.setattr(ort, "InferenceSession", fake)
    return calls


def test_names_short_and_full() -> None:
    assert P.resolve_name("trt") == P.TENSORRT
    assert P.resolve_name(" CUDA ") == P.CUDA
    assert P.resolve_name("cpu") == P.CPU
    assert P.resolve_name("CPUExecutionProvider") == P.CPU
    assert P.resolve_name("openvinoexecutionprovider") == "OpenVINOExecutionProvider"
    assert P.parse_providers("TRT, cuda;cpu") == ALL_THREE


@pytest.mark.parametrize("bad", ["cdua", "GPU0", "TensorFlow"])
def test_unknown_name_is_a_clear_error(bad: str) -> None:
    with pytest.raises(P.ProviderError, match=f"unknown execution provider '{bad}'.*cuda"):
        P.resolve_name(bad)
    with pytest.raises(P.ProviderError):
        P.provider_order([bad, "cpu"])


def test_default_order_keeps_only_available() -> None:
    assert P.provider_order(available=ALL_THREE) == ALL_THREE
    assert P.provider_order(available=[P.CUDA, P.CPU, "AzureExecutionProvider"]) == [P.CUDA, P.CPU]
    # this machine: onnxruntime CPU build
    assert P.provider_order() == [p for p in ALL_THREE if p in P.available_providers()]
    assert P.provider_order()[-1] == P.CPU


def test_cpu_always_closes_the_list() -> None:
    assert P.provider_order(["cuda"], available=ALL_THREE) == [P.CUDA, P.CPU]
    assert P.provider_order(["cuda", "cuda", "trt"], available=ALL_THREE) == [
        P.CUDA,
        P.TENSORRT,
        P.CPU,
    ]


def test_requested_but_missing_is_dropped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "edge.providers"):
        assert P.provider_order(["trt", "cpu"], available=[P.CPU]) == [P.CPU]
    assert "TensorrtExecutionProvider is not in this onnxruntime build" in caplog.text


def test_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(P.ENV, "CUDA,CPU")
    assert P.provider_order(available=ALL_THREE) == [P.CUDA, P.CPU]
    assert P.provider_order(fallback=[P.TENSORRT], available=ALL_THREE) == [P.CUDA, P.CPU]
    assert P.provider_order(["cpu"], available=ALL_THREE) == [P.CPU]  # explicit wins
    monkeypatch.setenv(P.ENV, "cpu,tpu")
    with pytest.raises(P.ProviderError, match="'tpu'"):
        P.provider_order(available=ALL_THREE)
    monkeypatch.setenv(P.ENV, " , ")
    with pytest.raises(P.ProviderError, match="empty provider list"):
        P.provider_order(available=ALL_THREE)


def test_bundle_list_used_when_nothing_else(monkeypatch: pytest.MonkeyPatch) -> None:
    assert P.provider_order(fallback=[P.CUDA, P.CPU], available=ALL_THREE) == [P.CUDA, P.CPU]


def test_cpu_session_runs(model: Path, probe: np.ndarray) -> None:
    opened = P.open_session(model, [P.CPU], probe=probe, threads=1)
    session, used = opened.session, opened.provider
    assert used == P.CPU
    logits, cam = session.run(["logits", "cam"], {"image": probe})
    assert logits.shape == (1, 4) and cam.shape == (1, 16, 16)


def test_real_silent_fallback_is_detected(
    model: Path, probe: np.ndarray, caplog: pytest.LogCaptureFixture
) -> None:
    """This onnxruntime has no CUDA: ORT quietly runs on CPU, and we say so."""
    assert P.CUDA not in P.available_providers()
    with caplog.at_level(logging.INFO, "edge.providers"):
        opened = P.open_session(model, [P.CUDA], probe=probe)
    assert opened.provider == P.CPU
    assert "fell back to CPUExecutionProvider" in opened.skipped[P.CUDA]
    assert "CUDAExecutionProvider skipped" in caplog.text
    assert "using CPUExecutionProvider" in caplog.text


def test_creation_failure_falls_back(
    monkeypatch: pytest.MonkeyPatch,
    model: Path,
    probe: np.ndarray,
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = _patch(monkeypatch, fail_create={P.TENSORRT})
    with caplog.at_level(logging.INFO, "edge.providers"):
        opened = P.open_session(model, ALL_THREE, probe=probe)
    assert opened.provider == P.CUDA
    assert opened.skipped == {
        P.TENSORRT: "session creation failed (RuntimeError: TensorrtExecutionProvider:"
        " device not found)"
    }
    assert [c[0] for c in calls] == [P.TENSORRT, P.CUDA]
    # the TensorRT attempt still lists CUDA and CPU after it, for the nodes TRT cannot take
    assert [p for p, _ in calls[0][2]] == ALL_THREE
    assert "TensorrtExecutionProvider skipped: session creation failed" in caplog.text
    assert "using CUDAExecutionProvider" in caplog.text


def test_first_run_failure_falls_back_to_cpu(
    monkeypatch: pytest.MonkeyPatch, model: Path, probe: np.ndarray
) -> None:
    _patch(monkeypatch, fail_create={P.TENSORRT}, fail_run={P.CUDA})
    opened = P.open_session(model, ALL_THREE, probe=probe)
    session, used = opened.session, opened.provider
    assert used == P.CPU
    assert session.get_providers()[0] == P.CPU
    opened = P.open_session(model, [P.CUDA], probe=probe)  # CPU appended by itself
    assert opened.provider == P.CPU
    assert opened.skipped[P.CUDA] == (
        "first run failed (RuntimeError: CUDNN_STATUS_EXECUTION_FAILED)"
    )


def test_without_probe_a_bad_run_is_not_noticed(
    monkeypatch: pytest.MonkeyPatch, model: Path
) -> None:
    """Why the runtime always passes a probe: creation alone does not prove the provider."""
    _patch(monkeypatch, fail_run={P.CUDA})
    assert P.open_session(model, [P.CUDA]).provider == P.CUDA


def test_all_fail_names_the_file_and_reasons(
    monkeypatch: pytest.MonkeyPatch, model: Path, probe: np.ndarray
) -> None:
    _patch(monkeypatch, fail_create={P.CUDA, P.CPU})
    with pytest.raises(RuntimeError, match=r"classifier\.onnx: no execution provider") as e:
        P.open_session(model, [P.CUDA], probe=probe)
    assert "CUDAExecutionProvider: session creation failed" in str(e.value)
    assert "CPUExecutionProvider: session creation failed" in str(e.value)


def test_a_probe_the_model_rejects_fails_on_cpu_too(model: Path) -> None:
    wrong = np.zeros((1, 3, 32, 32), np.float32)  # the model wants 64x64
    with pytest.raises(RuntimeError, match=r"CPUExecutionProvider: first run failed"):
        P.open_session(model, [P.CPU], probe=wrong)


def test_check_errors_propagate_without_fallback(
    monkeypatch: pytest.MonkeyPatch, model: Path, probe: np.ndarray
) -> None:
    calls = _patch(monkeypatch)

    def check(session: ort.InferenceSession) -> None:
        raise RuntimeError("model does not match the manifest")

    with pytest.raises(RuntimeError, match="does not match the manifest"):
        P.open_session(model, [P.CUDA, P.CPU], probe=probe, check=check)
    assert len(calls) == 1  # a contract error is not a provider problem: no retry on CPU


def test_threads(monkeypatch: pytest.MonkeyPatch, model: Path) -> None:
    calls = _patch(monkeypatch)
    P.open_session(model, [P.CPU], threads=1)
    P.open_session(model, [P.CPU])
    assert calls[0][1].intra_op_num_threads == 1
    assert calls[1][1].intra_op_num_threads == P.default_threads() >= 1


def test_tensorrt_options(model: Path, probe: np.ndarray) -> None:
    opts = P.provider_options(P.TENSORRT, model, precision="int8", probe=probe, max_batch=16)
    assert opts["trt_engine_cache_enable"] is True
    assert opts["trt_engine_cache_path"] == str(model.parent / "trt_cache")
    assert opts["trt_int8_enable"] and opts["trt_fp16_enable"]
    assert opts["trt_profile_min_shapes"] == "image:1x3x64x64"
    assert opts["trt_profile_max_shapes"] == "image:16x3x64x64"
    fp32 = P.provider_options(P.TENSORRT, model, precision="fp32")
    assert not fp32["trt_fp16_enable"] and not fp32["trt_int8_enable"]
    assert "trt_profile_min_shapes" not in fp32
    fp16 = P.provider_options(P.TENSORRT, model, precision="fp16")
    assert fp16["trt_fp16_enable"] and not fp16["trt_int8_enable"]
    assert P.provider_options(P.CUDA, model) == {} == P.provider_options(P.CPU, model)


def test_bundle_targets_list_their_order_from_here() -> None:
    """The exporter writes these into manifests; the GPU targets ask for the device's default
    order, so the two cannot drift apart."""
    assert P.target_providers("cpu") == [P.CPU]
    assert P.target_providers("cuda") == P.target_providers("jetson") == list(P.DEFAULT_ORDER)
    assert P.DEFAULT_ORDER[-1] == P.CPU
    with pytest.raises(P.ProviderError, match="'tpu'"):
        P.target_providers("tpu")
    import export.pipeline as pipeline

    assert not hasattr(pipeline, "PROVIDERS")  # no second table in the exporter
