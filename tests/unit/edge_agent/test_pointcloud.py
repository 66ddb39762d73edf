"""Point-cloud helpers on a real KITTI sweep: PCD round trip, range crop, voxel grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_agent.sources.base import BadInputError
from edge_agent.sources.pointcloud import crop_range, read_pcd, voxel_downsample, write_pcd

DATA = Path(__file__).resolve().parents[3] / "data"


@pytest.fixture(scope="module")
def sweep() -> np.ndarray:
    raw = np.fromfile(DATA / "kitti_object/training/velodyne/000000.bin", dtype="<f4")
    return raw.reshape(-1, 4)


def test_pcd_round_trip(tmp_path: Path, sweep: np.ndarray) -> None:
    path = tmp_path / "s.pcd"
    write_pcd(path, sweep, ("x", "y", "z", "reflectance"))
    points, fields = read_pcd(path)
    assert fields == ("x", "y", "z", "reflectance")
    assert np.array_equal(points, sweep)


def test_pcd_missing_or_garbage(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="missing"):
        read_pcd(tmp_path / "none.pcd")
    bad = tmp_path / "bad.pcd"
    bad.write_bytes(b"VERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\n")
    with pytest.raises(BadInputError, match="not a readable PCD"):
        read_pcd(bad)


def test_crop_and_voxel(sweep: np.ndarray) -> None:
    near = crop_range(sweep, 2.5, 50.0)
    rng = np.hypot(near[:, 0], near[:, 1])
    assert rng.min() >= 2.5
    assert rng.max() <= 50.0
    assert 0.5 * len(sweep) < len(near) < len(sweep)
    down = voxel_downsample(sweep, ("x", "y", "z", "reflectance"), 0.5)
    assert down.shape[1] == 4
    assert 5_000 < len(down) < len(sweep) // 2
    # Averages stay inside the data's range.
    assert down[:, 3].min() >= sweep[:, 3].min()
    assert down[:, 3].max() <= sweep[:, 3].max()
    with pytest.raises(ValueError, match="voxel_m"):
        voxel_downsample(sweep, ("x", "y", "z", "reflectance"), 0.0)
