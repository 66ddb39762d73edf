"""Camera and LiDAR preprocessing on real files: shapes, normalisation, determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from edge_agent.models import ModelInputError, RunnerConfig, load_model, metadata_from_mapping
from edge_agent.models.preprocess import prepare_image, prepare_points, select_points
from edge_agent.models.runner import CameraModel, LidarModel
from tests.support.tiny_models import camera_props, lidar_props

CPU_ONLY = RunnerConfig(providers=("cpu",))
NUSC_FIELDS = ("x", "y", "z", "intensity", "ring")


def test_kitti_image_is_resized_and_normalised(kitti_image: NDArray[np.uint8]) -> None:
    meta = metadata_from_mapping(camera_props(height=96, width=320), "m")
    tensor = prepare_image(kitti_image, meta)
    assert tensor.shape == (1, 3, 96, 320)
    assert tensor.dtype == np.float32
    assert tensor.flags.c_contiguous
    # (p / 255 - 0.5) / 0.25 lies in [-2, 2]; a real street scene spans most of it
    assert -2.0 - 1e-6 <= tensor.min() < -1.0
    assert 1.0 < tensor.max() <= 2.0 + 1e-6
    np.testing.assert_array_equal(tensor, prepare_image(kitti_image, meta))


def test_nhwc_layout_and_same_size_skip_resize() -> None:
    meta = metadata_from_mapping(camera_props(input_layout="NHWC", input_shape="[1, 4, 6, 3]"), "m")
    image = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    tensor = prepare_image(image, meta)
    assert tensor.shape == (1, 4, 6, 3)
    np.testing.assert_allclose(tensor[0], (image / 255 - 0.5) / 0.25, rtol=1e-5)


@pytest.mark.parametrize(
    "image",
    [np.zeros((8, 8), np.uint8), np.zeros((8, 8, 4), np.uint8), np.zeros((8, 8, 3), np.float32)],
)
def test_bad_images_raise_model_input_error(image: np.ndarray) -> None:
    meta = metadata_from_mapping(camera_props(), "m")
    with pytest.raises(ModelInputError, match="uint8 RGB"):
        prepare_image(image, meta)


def test_nuscenes_sweep_is_cropped_and_subsampled_deterministically(
    nusc_points: NDArray[np.float32],
) -> None:
    meta = metadata_from_mapping(lidar_props(points=4096), "m")
    tensor, index = prepare_points(nusc_points, meta, NUSC_FIELDS)
    assert tensor.shape == (1, 4096, 3)
    assert tensor.dtype == np.float32
    assert index.shape == (4096,)
    assert len(np.unique(index)) == 4096  # no repeats while the sweep has enough points
    assert np.all(np.diff(index) > 0)
    chosen = nusc_points[index]
    assert np.abs(chosen[:, :2]).max() <= 40.0
    assert chosen[:, 2].min() >= -3.0
    np.testing.assert_allclose(tensor[0], chosen[:, :3] / np.array([10, 10, 2]), rtol=1e-6)
    again, again_index = prepare_points(nusc_points, meta, NUSC_FIELDS)
    np.testing.assert_array_equal(again, tensor)
    np.testing.assert_array_equal(again_index, index)
    _, other = prepare_points(nusc_points, meta, NUSC_FIELDS, seed=1)
    assert not np.array_equal(other, index)


def test_small_sweep_is_padded_with_its_own_points() -> None:
    meta = metadata_from_mapping(lidar_props(points=64), "m")
    points = np.array([[1, 2, 0, 0], [3, 4, 1, 0], [100, 0, 0, 0], [np.nan, 0, 0, 0]], np.float32)
    index = select_points(points, meta)
    assert index.shape == (64,)
    assert set(index.tolist()) == {0, 1}  # out of range and NaN rows dropped, both kept ones used
    assert index[:2].tolist() == [0, 1]


def test_sweep_with_nothing_in_range_raises(nusc_points: NDArray[np.float32]) -> None:
    meta = metadata_from_mapping(lidar_props(points=64), "m")
    far = np.full((10, 4), 500.0, dtype=np.float32)
    with pytest.raises(ModelInputError, match="no finite point"):
        select_points(far, meta)
    with pytest.raises(ModelInputError, match="'intensity'"):
        prepare_points(
            nusc_points[:, :3],
            metadata_from_mapping(
                lidar_props(
                    points=64,
                    point_features='["x", "y", "z", "intensity"]',
                    input_shape="[1, 64, 4]",
                    point_mean="[0, 0, 0, 0]",
                    point_std="[1, 1, 1, 1]",
                ),
                "m",
            ),
            NUSC_FIELDS,
        )
    with pytest.raises(ModelInputError, match=r"\(N, C >= 3\)"):
        select_points(np.zeros((5, 2), np.float32), meta)


def test_camera_model_scores_a_real_image(
    camera_model: Path, kitti_image: NDArray[np.uint8]
) -> None:
    model = load_model(camera_model, config=CPU_ONLY)
    assert isinstance(model, CameraModel)
    out = model.score(kitti_image)
    assert out.probs.shape == (8 * 16, 3)
    assert out.embedding.shape == (3,)
    np.testing.assert_array_equal(out.probs, model.score(kitti_image).probs)


def test_lidar_model_scores_a_real_sweep(
    lidar_model: Path, nusc_points: NDArray[np.float32]
) -> None:
    model = load_model(lidar_model, config=CPU_ONLY)
    assert isinstance(model, LidarModel)
    out = model.score(nusc_points)
    assert out.probs.shape == (16, 3)
    assert out.index is not None
    assert out.index.shape == (16,)
    np.testing.assert_array_equal(out.probs, model.score(nusc_points).probs)
