"""Provider choice (pure), fallback reporting, and the IO-binding decision."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from edge_agent.models import ModelRunner, RunnerConfig, providers
from edge_agent.models.errors import ModelConfigError
from edge_agent.models.providers import (
    CPU,
    CUDA,
    DEFAULT_PREFERENCE,
    TENSORRT,
    choose_providers,
    effective_fallbacks,
    is_auto,
    normalise_provider,
    report_providers,
    uses_io_binding,
)

ALL = [TENSORRT, CUDA, CPU]


def test_default_preference_is_tensorrt_cuda_cpu() -> None:
    assert DEFAULT_PREFERENCE == (TENSORRT, CUDA, CPU)
    plan = choose_providers(ALL)
    assert plan.chosen == (TENSORRT, CUDA, CPU)
    assert plan.skipped == ()


def test_unavailable_providers_are_skipped_with_a_reason() -> None:
    plan = choose_providers([CPU], DEFAULT_PREFERENCE)
    assert plan.chosen == (CPU,)
    assert [name for name, _ in plan.skipped] == [TENSORRT, CUDA]
    assert all("not offered" in reason for _, reason in plan.skipped)


def test_aliases_order_and_duplicates() -> None:
    plan = choose_providers(ALL, ["cuda", "CUDA", "cpu"])
    assert plan.chosen == (CUDA, CPU)
    assert plan.requested == (CUDA, CPU)


def test_cpu_is_always_the_floor() -> None:
    assert choose_providers(ALL, ["cuda"]).chosen == (CUDA, CPU)
    assert choose_providers([CPU], ["tensorrt"]).chosen == (CPU,)


def test_unknown_or_empty_preference_is_a_config_error() -> None:
    with pytest.raises(ModelConfigError, match=r"'gpu'.*cuda"):
        normalise_provider("gpu")
    with pytest.raises(ModelConfigError, match="empty"):
        choose_providers(ALL, [])
    assert isinstance(ModelConfigError("x"), ValueError)


def test_full_names_of_other_providers_pass_through() -> None:
    plan = choose_providers([CPU, "OpenVINOExecutionProvider"], ["OpenVINOExecutionProvider"])
    assert plan.chosen == ("OpenVINOExecutionProvider", CPU)


def test_silent_fallback_is_detected() -> None:
    plan = choose_providers(ALL, DEFAULT_PREFERENCE)
    lost = effective_fallbacks(plan, [CPU])
    assert [name for name, _ in lost] == [TENSORRT, CUDA]
    assert all("fell back" in reason for _, reason in lost)
    assert effective_fallbacks(plan, [TENSORRT, CUDA, CPU]) == ()
    # only CPU requested: nothing lost
    assert effective_fallbacks(choose_providers(ALL, ["cpu"]), [CPU]) == ()


@pytest.mark.parametrize(
    ("provider", "bound"), [(TENSORRT, True), (CUDA, True), (CPU, False), ("Other", False)]
)
def test_io_binding_only_for_gpu_providers(provider: str, bound: bool) -> None:
    assert uses_io_binding(provider) is bound


def test_runner_reports_the_provider_in_effect(
    lidar_model: Path,
    camera_model: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The default preference (auto) on this machine: whatever is offered, report what really
    runs. Without a usable GPU that is said once per process at INFO, with no WARNING and
    none of onnxruntime's own red "Failed to load library" lines on stderr."""
    monkeypatch.setattr(providers, "_CPU_FALLBACK_SAID", set())
    caplog.set_level(logging.DEBUG, logger="edge_agent.models.providers")
    runner = ModelRunner(lidar_model)  # TensorRT -> CUDA -> CPU
    ModelRunner(camera_model)
    assert runner.provider == runner.providers[0]
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    debug = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)
    err = capfd.readouterr().err
    assert "onnxruntime" not in err, err
    assert len(info) <= 2
    assert any(runner.provider in m for m in info)
    if runner.provider == CPU:  # CI and this machine: no usable GPU
        assert runner.io_binding is False
        assert len(info) == 1  # two models, one line
        assert "no usable GPU" in info[0]
        assert not warned
        for name in (TENSORRT, CUDA):
            if name in ort.get_available_providers():
                assert f"{name} not in effect" in debug
    # a provider asked for by name and lost stays a WARNING, every time
    caplog.clear()
    explicit = ModelRunner(lidar_model, config=RunnerConfig(providers=("cuda", "cpu")))
    if explicit.provider == CPU:
        warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any(f"provider {CUDA} requested but not in effect" in m for m in warned)


def test_auto_cpu_fallback_is_said_once_at_info(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(providers, "_CPU_FALLBACK_SAID", set())
    caplog.set_level(logging.DEBUG, logger="edge_agent.models.providers")
    plan = choose_providers(ALL)
    assert is_auto(plan.requested)
    for model in ("camera 1", "lidar 1", "camera 2"):
        assert report_providers(model, plan, [CPU], {CUDA: "libcublasLt.so.13: not found"}) == CPU
    by_level = {
        level: [r.getMessage() for r in caplog.records if r.levelno == level]
        for level in (logging.DEBUG, logging.INFO, logging.WARNING)
    }
    assert len(by_level[logging.INFO]) == 1
    assert by_level[logging.WARNING] == []
    assert any("libcublasLt.so.13" in m for m in by_level[logging.DEBUG])
    assert sum("running on" in m for m in by_level[logging.DEBUG]) == 3
    caplog.clear()
    explicit = choose_providers(ALL, ["cuda", "cpu"])
    assert not is_auto(explicit.requested)
    report_providers("camera 3", explicit, [CPU])
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.INFO]


def test_cpu_session_uses_the_plain_run_path(
    lidar_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = ModelRunner(lidar_model, config=RunnerConfig(providers=("cpu",)))
    assert runner.provider == CPU
    assert runner.io_binding is False

    def _fail(*_: Any) -> None:
        raise AssertionError("io binding used on CPU")

    monkeypatch.setattr(runner, "_run_bound", _fail)
    out = runner.run(runner.zero_batch())
    assert out.probs.shape == (16, 3)


class _FakeBinding:
    def __init__(self, session: _FakeGpuSession) -> None:
        self.session = session
        self.inputs: dict[str, Any] = {}
        self.outputs: list[tuple[str, str]] = []

    def bind_ortvalue_input(self, name: str, value: Any) -> None:
        self.inputs[name] = value

    def bind_output(self, name: str, device: str) -> None:
        self.outputs.append((name, device))

    def copy_outputs_to_cpu(self) -> list[Any]:
        feeds = {k: v.numpy() for k, v in self.inputs.items()}
        return list(self.session.inner.run([n for n, _ in self.outputs], feeds))


class _FakeGpuSession:
    """Wraps a real CPU session but claims CUDA, to drive the IO-binding branch on CPU."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["providers"] = [CPU]
        self.inner = _REAL_SESSION(*args, **kwargs)
        self.bindings: list[_FakeBinding] = []

    def get_providers(self) -> list[str]:
        return [CUDA, CPU]

    def io_binding(self) -> _FakeBinding:
        binding = _FakeBinding(self)
        self.bindings.append(binding)
        return binding

    def run_with_iobinding(self, binding: _FakeBinding) -> None:
        assert binding is self.bindings[-1]

    def run(self, *_: Any) -> None:
        raise AssertionError("plain run used on a GPU session")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


_REAL_SESSION = ort.InferenceSession


def test_gpu_session_binds_inputs_on_the_device_and_outputs_on_the_host(
    lidar_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    devices: list[tuple[str, int]] = []
    real_from_numpy = ort.OrtValue.ortvalue_from_numpy

    def _from_numpy(array: np.ndarray, device: str, device_id: int) -> Any:
        devices.append((device, device_id))
        return real_from_numpy(array)  # CPU stand-in for the host-to-device copy

    monkeypatch.setattr(ort, "InferenceSession", _FakeGpuSession)
    runner = ModelRunner(lidar_model, config=RunnerConfig(providers=("cuda", "cpu"), device_id=1))
    assert runner.provider == CUDA
    assert runner.io_binding is True
    monkeypatch.setattr(ort.OrtValue, "ortvalue_from_numpy", _from_numpy)
    out = runner.run(runner.zero_batch())
    assert devices == [("cuda", 1)]
    session = runner._session
    assert isinstance(session, _FakeGpuSession)
    assert session.bindings[-1].outputs == [("scores", "cpu"), ("embedding", "cpu")]
    assert out.probs.shape == (16, 3)
    np.testing.assert_allclose(out.probs.sum(axis=-1), 1.0, rtol=1e-5)
