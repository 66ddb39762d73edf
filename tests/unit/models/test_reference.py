"""Reference models: labelling of the real data, and a --quick train + export + parity run."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.typing import NDArray

from edge_agent.models import RunnerConfig, load_model, read_metadata
from ingest_service.training.reference.data import (
    _NUSC_NAMES,
    LIDAR_CLASSES,
    load_lidar_sweeps,
    points_in_box,
)
from ingest_service.training.reference.train import main
from edge_agent.models.runner import CameraModel, LidarModel
from tests.support.tiny_models import DATA

CPU_ONLY = RunnerConfig(providers=("cpu",))


def test_nuscenes_box_convention_matches_the_annotated_point_counts() -> None:
    """Gravity-centre boxes with l along x reproduce nuScenes' own num_lidar_pts."""
    info_path = next((DATA / "nuscenes_sample").glob("*.info.json"))
    entry = json.loads(info_path.read_text())["data_list"][0]
    points = np.fromfile(DATA / "nuscenes_sample" / entry["lidar_points"]["lidar_path"], np.float32)
    xyz = points.reshape(-1, 5)[:, :3]
    matches = 0
    for inst in entry["instances"]:
        x, y, z, length, width, height, yaw = inst["bbox_3d"]
        c, s = np.cos(yaw), np.sin(yaw)
        rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
        count = points_in_box(
            xyz, np.array([x, y, z]), rot, 0.5 * np.array([length, width, height])
        )
        matches += abs(int(count.sum()) - inst["num_lidar_pts"]) <= 2
    assert matches >= 0.9 * len(entry["instances"])
    assert len(_NUSC_NAMES) == len(json.loads(info_path.read_text())["metainfo"]["categories"])


def test_lidar_sweeps_carry_every_class() -> None:
    sweeps = load_lidar_sweeps(DATA)
    assert [s.name.split("/")[0] for s in sweeps] == [
        "av2",
        "av2",
        "nuscenes",
        "kitti",
        "kitti",
        "kitti",
    ]
    labels = np.concatenate([s.labels for s in sweeps])
    counts = np.bincount(labels[labels >= 0], minlength=len(LIDAR_CLASSES))
    assert (counts > 0).all()
    for sweep in sweeps:
        assert sweep.points.dtype == np.float32
        assert len(sweep.points) == len(sweep.labels) == len(sweep.holdout)
        assert 0.1 < sweep.holdout.mean() < 0.6


@pytest.fixture(scope="module")
def quick_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("models")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:  # the CLI, in-process and sequential (--jobs 1)
        assert main(["--out", str(out), "--data", str(DATA), "--quick", "--jobs", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    report = json.loads((out / "training_report.json").read_text())
    for kind in ("camera", "lidar"):
        entry = report["models"][kind]
        assert entry["parity_max_abs_diff"] < 1e-4  # onnxruntime agrees with torch
        assert 0.0 <= entry["holdout"]["accuracy"] <= 1.0
    return {kind: out / f"{kind}.onnx" for kind in ("camera", "lidar")}


def test_quick_models_are_exported_with_metadata_and_checksum(
    quick_models: dict[str, Path],
) -> None:
    for kind, path in quick_models.items():
        meta = read_metadata(path)
        assert meta.kind == kind
        assert meta.version == f"ref-{kind}-1.0.0-quick"
        assert "non-commercial" in meta.extra["licence"]
        assert json.loads(meta.extra["training_data"])
        digest, name = path.with_name(path.name + ".sha256").read_text().split()
        assert name == path.name
        assert digest == hashlib.sha256(path.read_bytes()).hexdigest()


def test_quick_camera_model_on_a_real_image(
    quick_models: dict[str, Path], kitti_image: NDArray[np.uint8]
) -> None:
    path = quick_models["camera"]
    digest = path.with_name(path.name + ".sha256").read_text().split()[0]
    model = load_model(path, sha256=digest, config=CPU_ONLY)
    assert isinstance(model, CameraModel)
    out = model.score(kitti_image)
    height, width = model.metadata.image_size
    assert out.probs.shape == (4, (height // 16) * (width // 16), 6)
    np.testing.assert_allclose(out.probs.sum(axis=-1), 1.0, rtol=1e-5)
    assert out.embedding.shape == (32,)


def test_quick_lidar_model_on_a_real_sweep(
    quick_models: dict[str, Path], nusc_points: NDArray[np.float32]
) -> None:
    model = load_model(quick_models["lidar"], config=CPU_ONLY)
    assert isinstance(model, LidarModel)
    out = model.score(nusc_points)
    assert out.probs.shape == (1024, len(LIDAR_CLASSES))
    assert out.embedding.shape == (32,)
    assert out.index is not None
