"""ModelRunner on tiny ONNX models: probabilities, committee axis, embedding, failures."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import numpy as np
import pytest

from edge_agent.models import (
    ChecksumMismatchError,
    ModelError,
    ModelInputError,
    ModelLoadError,
    ModelOutputError,
    ModelRunner,
    RunnerConfig,
    load_model,
)
from edge_agent.models.errors import ModelConfigError
from edge_agent.models.runner import LidarModel, softmax
from tests.support.tiny_models import build_lidar, lidar_props

CPU_ONLY = RunnerConfig(providers=("cpu",))


def _points_batch(points: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"points": rng.normal(size=(1, points, 3)).astype(np.float32)}


def test_logits_become_probabilities(lidar_model: Path) -> None:
    runner = ModelRunner(lidar_model, config=CPU_ONLY)
    batch = _points_batch()
    out = runner.run(batch)
    assert out.probs.shape == (16, 3)
    assert out.probs.dtype == np.float32
    np.testing.assert_allclose(out.probs.sum(axis=1), 1.0, rtol=1e-5)
    weight = np.random.default_rng(0).normal(size=(3, 3)).astype(np.float32)
    np.testing.assert_allclose(
        out.probs, softmax(batch["points"][0] @ weight), rtol=1e-4, atol=1e-6
    )
    assert out.embedding.shape == (3,)
    np.testing.assert_allclose(out.embedding, batch["points"][0].max(axis=0))
    assert out.seconds > 0
    assert (out.model_name, out.model_version) == ("tiny-lidar", "tiny-lidar-1")


def test_committee_axis_and_probabilities_output(tmp_path: Path) -> None:
    path = build_lidar(tmp_path / "committee.onnx", members=4, logits=False)
    runner = ModelRunner(path, config=CPU_ONLY)
    assert runner.metadata.committee_axis
    out = runner.run(_points_batch())
    assert out.probs.shape == (4, 16, 3)
    np.testing.assert_allclose(out.probs.sum(axis=-1), 1.0, rtol=1e-5)
    # the members differ: a committee that always agrees would be useless
    assert np.abs(out.probs[0] - out.probs[1]).max() > 1e-3


def test_probs_that_are_not_a_distribution_are_refused(tmp_path: Path) -> None:
    props = lidar_props(probs_are_logits="false")
    path = build_lidar(tmp_path / "liar.onnx", props=props)  # emits raw x @ W, claims probs
    runner = ModelRunner(path, config=CPU_ONLY)
    with pytest.raises(ModelOutputError, match="probs_are_logits"):
        runner.run(_points_batch())


def test_non_finite_outputs_raise_model_output_error(tmp_path: Path) -> None:
    weight = np.full((3, 3), np.nan, dtype=np.float32)
    runner = ModelRunner(build_lidar(tmp_path / "nan.onnx", weight=weight), config=CPU_ONLY)
    with pytest.raises(ModelOutputError, match="non-finite") as info:
        runner.run(_points_batch())
    assert isinstance(info.value, ModelError)  # what the caller's loop catches


def test_wrong_output_shape_raises(tmp_path: Path) -> None:
    props = lidar_props(class_names='["a", "b", "c", "d"]')  # the graph has K=3
    runner = ModelRunner(build_lidar(tmp_path / "k.onnx", props=props), config=CPU_ONLY)
    with pytest.raises(ModelOutputError, match="K=4"):
        runner.run(_points_batch())


def test_missing_file_is_a_load_error_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.onnx"
    with pytest.raises(ModelLoadError, match=r"nowhere\.onnx") as info:
        ModelRunner(path)
    assert "reference.train" in str(info.value)
    assert info.value.path == str(path)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_file_is_a_load_error_naming_the_path(lidar_model: Path, damage: str) -> None:
    data = lidar_model.read_bytes()
    broken = lidar_model.with_name(f"broken-{damage}.onnx")
    broken.write_bytes(
        {
            "garbage": b"\x08\xff" * 64 + data[::-3],
            "truncated": data[: len(data) // 2],
            "empty": b"",
        }[damage]
    )
    with pytest.raises(ModelLoadError, match=f"broken-{damage}.onnx") as info:
        ModelRunner(broken, config=CPU_ONLY)
    assert "re-export or re-download" in str(info.value)


def test_sha256_is_verified(lidar_model: Path) -> None:
    digest = hashlib.sha256(lidar_model.read_bytes()).hexdigest()
    runner = ModelRunner(lidar_model, sha256=digest.upper(), config=CPU_ONLY)
    assert runner.sha256 == digest
    with pytest.raises(ChecksumMismatchError, match="differs from the expected") as info:
        ModelRunner(lidar_model, sha256="0" * 64, config=CPU_ONLY)
    assert str(lidar_model) in str(info.value)
    assert isinstance(info.value, ModelLoadError)


def test_metadata_that_does_not_match_the_graph_is_a_load_error(tmp_path: Path) -> None:
    for key, value in [
        ("input_name", "xyz"),
        ("probs_output", "nope"),
        ("input_shape", "[1, 8, 3]"),
    ]:
        path = build_lidar(tmp_path / f"{key}.onnx", props=lidar_props(**{key: value}))
        with pytest.raises(ModelLoadError, match=key):
            ModelRunner(path, config=CPU_ONLY)


def test_bad_inputs_raise_model_input_error(lidar_model: Path) -> None:
    runner = ModelRunner(lidar_model, config=CPU_ONLY)
    with pytest.raises(ModelInputError, match="takes one input"):
        runner.run({"wrong": np.zeros((1, 16, 3), np.float32)})
    with pytest.raises(ModelInputError, match=r"\[1, 16, 3\]"):
        runner.run({"points": np.zeros((1, 8, 3), np.float32)})
    with pytest.raises(ModelInputError, match="float32"):
        runner.run({"points": np.zeros((1, 16, 3), np.float64)})


def test_runner_settings_are_validated() -> None:
    with pytest.raises(ModelConfigError, match="intra_op_threads"):
        RunnerConfig(intra_op_threads=0)
    assert RunnerConfig().intra_op_threads == 1
    with pytest.raises(ModelConfigError, match="'gpu'"):
        RunnerConfig(providers=("gpu",))
    with pytest.raises(ModelConfigError, match="empty"):
        RunnerConfig(providers=())


def test_threads_setting_is_applied(lidar_model: Path) -> None:
    runner = ModelRunner(lidar_model, config=RunnerConfig(providers=("cpu",), intra_op_threads=2))
    assert runner.intra_op_threads == 2
    assert runner.run(runner.zero_batch()).probs.shape == (16, 3)


def test_concurrent_runs_are_safe(lidar_model: Path) -> None:
    runner = ModelRunner(lidar_model, config=CPU_ONLY)
    expected = [runner.run(_points_batch(seed=s)).probs for s in range(4)]
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        try:
            for _ in range(50):
                np.testing.assert_array_equal(
                    runner.run(_points_batch(seed=seed)).probs, expected[seed]
                )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_load_model_wraps_by_kind(lidar_model: Path, camera_model: Path) -> None:
    assert isinstance(load_model(lidar_model, config=CPU_ONLY), LidarModel)
    camera = load_model(camera_model, config=CPU_ONLY)
    assert camera.metadata.kind == "camera"
    with pytest.raises(ModelConfigError, match="not a lidar model"):
        LidarModel(camera.runner)
