"""Fixtures of the model-layer tests; the tiny ONNX builders live in tests/support."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from tests.support.tiny_models import (
    KITTI_PNG,
    NUSC_BIN,
    build_camera,
    build_lidar,
)

__all__ = ["build_camera", "build_lidar"]


@pytest.fixture
def lidar_model(tmp_path: Path) -> Path:
    return build_lidar(tmp_path / "lidar.onnx")


@pytest.fixture
def camera_model(tmp_path: Path) -> Path:
    return build_camera(tmp_path / "camera.onnx")


@pytest.fixture
def nusc_points() -> NDArray[np.float32]:
    points = np.fromfile(NUSC_BIN, dtype=np.float32).reshape(-1, 5)
    points.flags.writeable = False  # frames hand out read-only arrays
    return points


@pytest.fixture
def kitti_image() -> NDArray[np.uint8]:
    from PIL import Image

    with Image.open(KITTI_PNG) as img:
        image = np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    image.flags.writeable = False
    return image
