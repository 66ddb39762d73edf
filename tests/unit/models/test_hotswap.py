"""ModelSlot: swap under concurrent scoring, refusal keeps the old model, rollback."""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from edge_agent.models import ModelError, ModelSlot, RunnerConfig, SwapError, load_model
from edge_agent.models.errors import ModelRunError
from edge_agent.models.hotswap import SwapReport
from tests.support.tiny_models import build_camera, build_lidar, lidar_props

CPU_ONLY = RunnerConfig(providers=("cpu",))


def _version(path: Path, version: str, seed: int, classes: int = 3, nan: bool = False) -> Path:
    weight = np.random.default_rng(seed).normal(size=(3, classes)).astype(np.float32)
    if nan:
        weight[:] = np.nan
    props = lidar_props(classes=classes, version=version)
    return build_lidar(path, classes=classes, weight=weight, props=props)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def slot(tmp_path: Path, nusc_points: NDArray[np.float32]) -> ModelSlot:
    v1 = _version(tmp_path / "v1.onnx", "v1", seed=1)
    return ModelSlot(load_model(v1, config=CPU_ONLY), sample=nusc_points, config=CPU_ONLY)


def test_scoring_continues_during_swaps_without_errors_or_drops(
    slot: ModelSlot, tmp_path: Path, nusc_points: NDArray[np.float32]
) -> None:
    paths = [_version(tmp_path / f"v{i}.onnx", f"v{i}", seed=i) for i in (2, 3)]
    stop = threading.Event()
    calls = 0
    versions: list[str] = []
    errors: list[BaseException] = []

    def score_forever() -> None:
        nonlocal calls
        while not stop.is_set():
            calls += 1
            try:
                versions.append(slot.score(nusc_points).model_version)
            except BaseException as exc:
                errors.append(exc)

    scorers = [threading.Thread(target=score_forever) for _ in range(2)]
    for t in scorers:
        t.start()
    try:
        reports: list[SwapReport] = []
        for _ in range(3):
            for path in paths:
                reports.append(slot.swap(path, _sha(path)))
        reports.append(slot.rollback())
        seen = len(versions)
        deadline = time.monotonic() + 10
        while len(versions) < seen + 5 and time.monotonic() < deadline:
            time.sleep(0.01)  # let the scorers pick up the rolled-back model
    finally:
        stop.set()
        for t in scorers:
            t.join()
    assert errors == []
    assert calls == len(versions) > 0  # every call returned an output
    assert versions[-1] == "v2"
    assert {r.active_version for r in reports} == {"v2", "v3"}
    assert slot.current.metadata.version == "v2"  # rolled back from v3
    assert reports[0].previous_version == "v1"
    assert reports[0].provider == "CPUExecutionProvider"


def test_in_flight_call_finishes_on_the_old_model(slot: ModelSlot, tmp_path: Path) -> None:
    old = slot.current
    new = _version(tmp_path / "v2.onnx", "v2", seed=2)
    slot.swap(new, None)
    # the caller that grabbed the old model before the swap still gets a valid result
    assert old.runner.run(old.runner.zero_batch()).model_version == "v1"
    assert slot.previous is old


@pytest.mark.parametrize("problem", ["corrupt", "checksum", "nan", "missing", "kind", "shape"])
def test_refused_swap_keeps_the_old_model(
    slot: ModelSlot, tmp_path: Path, nusc_points: NDArray[np.float32], problem: str
) -> None:
    sha: str | None = None
    if problem == "corrupt":
        path = tmp_path / "broken.onnx"
        path.write_bytes(b"\x08\x07not an onnx model" * 20)
    elif problem == "checksum":
        path = _version(tmp_path / "v2.onnx", "v2", seed=2)
        sha = "f" * 64
    elif problem == "nan":
        path = _version(tmp_path / "nan.onnx", "nan", seed=2, nan=True)
    elif problem == "missing":
        path = tmp_path / "absent.onnx"
    elif problem == "kind":
        path = build_camera(tmp_path / "camera.onnx")
    else:
        path = _version(tmp_path / "k4.onnx", "k4", seed=2, classes=4)
    with pytest.raises(
        SwapError, match=r"still running tiny-lidar v1|smoke inference failed"
    ) as info:
        slot.swap(path, sha)
    assert isinstance(info.value, ModelError)
    assert slot.current.metadata.version == "v1"
    assert slot.score(nusc_points).model_version == "v1"
    assert slot.previous is None


def test_shape_change_can_be_allowed(tmp_path: Path, nusc_points: NDArray[np.float32]) -> None:
    v1 = load_model(_version(tmp_path / "v1.onnx", "v1", seed=1), config=CPU_ONLY)
    slot = ModelSlot(v1, config=CPU_ONLY, allow_shape_change=True)  # synthetic smoke input
    slot.swap(_version(tmp_path / "k4.onnx", "k4", seed=2, classes=4), None)
    assert slot.score(nusc_points).probs.shape == (16, 4)


def test_rollback(slot: ModelSlot, tmp_path: Path) -> None:
    with pytest.raises(SwapError, match="no previous model"):
        slot.rollback()
    slot.swap(_version(tmp_path / "v2.onnx", "v2", seed=2), None)
    report = slot.rollback()
    assert (report.previous_version, report.active_version) == ("v2", "v1")
    assert slot.current.metadata.version == "v1"
    assert slot.rollback().active_version == "v2"  # and forward again


def test_a_broken_active_model_is_refused_at_construction(tmp_path: Path) -> None:
    bad = load_model(_version(tmp_path / "nan.onnx", "nan", seed=1, nan=True), config=CPU_ONLY)
    with pytest.raises(SwapError, match="smoke inference failed"):
        ModelSlot(bad)


def test_rollback_smoke_tests_the_previous_model_before_it_swaps(
    slot: ModelSlot,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    nusc_points: NDArray[np.float32],
) -> None:
    slot.swap(_version(tmp_path / "v2.onnx", "v2", seed=2), None)
    previous = slot.previous
    assert previous is not None

    def broken(*_: object, **__: object) -> None:
        raise ModelRunError("the session of v1 no longer runs")

    monkeypatch.setattr(previous, "score", broken)
    with pytest.raises(SwapError, match=r"rollback refused.*still running tiny-lidar v2"):
        slot.rollback()
    assert slot.current.metadata.version == "v2"  # the broken model never became active
    assert slot.score(nusc_points).model_version == "v2"
    assert slot.previous is previous


def _failing(model: object, monkeypatch: pytest.MonkeyPatch, fail: list[bool]) -> None:
    """Make ``model.score`` raise while ``fail[0]`` is true (a model that breaks on real frames)."""
    real = model.score  # type: ignore[attr-defined]

    def score(*args: object, **kwargs: object) -> object:
        if fail[0]:
            raise ModelRunError("onnxruntime: bad output")
        return real(*args, **kwargs)

    monkeypatch.setattr(model, "score", score)


def test_a_rising_error_rate_after_a_swap_rolls_back(
    slot: ModelSlot,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    nusc_points: NDArray[np.float32],
) -> None:
    rolled: list[tuple[SwapReport, str]] = []
    slot.watch(10, 0.2, lambda report, reason: rolled.append((report, reason)))
    for _ in range(10):  # the old model: no errors, the baseline is 0 %
        slot.score(nusc_points)
    slot.swap(_version(tmp_path / "v2.onnx", "v2", seed=2), None)
    _failing(slot.current, monkeypatch, [True])
    failures = 0
    while slot.current.metadata.version == "v2" and failures < 10:
        with pytest.raises(ModelRunError):
            slot.score(nusc_points)
        failures += 1
    assert failures == 3  # more than 20 % of a 10-call window: the third error rolls back
    assert slot.current.metadata.version == "v1"
    assert slot.score(nusc_points).model_version == "v1"
    (report, reason), *more = rolled
    assert not more
    assert (report.previous_version, report.active_version) == ("v2", "v1")
    assert "3 of its first 3 calls failed" in reason


def test_errors_within_the_threshold_keep_the_swap(
    slot: ModelSlot,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    nusc_points: NDArray[np.float32],
) -> None:
    rolled: list[str] = []
    slot.watch(10, 0.2, lambda _report, reason: rolled.append(reason))
    slot.swap(_version(tmp_path / "v2.onnx", "v2", seed=2), None)
    fail = [False]
    _failing(slot.current, monkeypatch, fail)
    for i in range(10):  # 2 errors of 10: not more than 20 %
        fail[0] = i in (3, 7)
        try:
            slot.score(nusc_points)
        except ModelRunError:
            assert fail[0]
    fail[0] = True  # past its window the model is no longer watched
    for _ in range(5):
        with pytest.raises(ModelRunError):
            slot.score(nusc_points)
    assert slot.current.metadata.version == "v2"
    assert rolled == []


def test_the_previous_models_error_rate_is_the_baseline(
    slot: ModelSlot,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    nusc_points: NDArray[np.float32],
) -> None:
    rolled: list[str] = []
    slot.watch(10, 0.2, lambda _report, reason: rolled.append(reason))
    fail = [False]
    _failing(slot.current, monkeypatch, fail)
    for i in range(10):  # the old model fails on 3 of 10 frames (bad frames, not the model)
        fail[0] = i < 3
        with contextlib.suppress(ModelRunError):
            slot.score(nusc_points)
    slot.swap(_version(tmp_path / "v2.onnx", "v2", seed=2), None)
    fail2 = [False]
    _failing(slot.current, monkeypatch, fail2)
    for i in range(10):  # the new one fails on 4 of 10: within 30 % + 20 %
        fail2[0] = i < 4
        with contextlib.suppress(ModelRunError):
            slot.score(nusc_points)
    assert slot.current.metadata.version == "v2"
    assert rolled == []
