"""The per-frame pipeline: every outcome is a row, counted by reason; selections are spooled."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from edge_agent.agent import build_pipeline
from edge_agent.config import AgentConfig, load_agent_config
from edge_agent.frame import Frame, SourceError, SourceErrorReason
from edge_agent.sources import open_source
from edge_agent.spool import Spool, SpoolError
from schemas.pointcloud import decode_lidar
from schemas.wire import decode_frame
from selector.stream import StreamSelector
from tests.support.tiny_models import build_camera, build_lidar

DATA = Path(__file__).resolve().parents[3] / "data"
KITTI = DATA / "kitti_object"


def _config(tmp_path: Path, **selector: object) -> AgentConfig:
    cam = build_camera(tmp_path / "camera.onnx")
    lid = build_lidar(tmp_path / "lidar.onnx", members=3)
    return load_agent_config(
        data={
            "agent": {"vehicle_id": "veh-t", "data_dir": str(tmp_path / "agent"), "seed": 3},
            "models": {"camera": str(cam), "lidar": str(lid)},
            "selector": {
                "uncertainty_method": "bald",
                "budget": {"target_rate": 1.0, "cold_start_frames": 0, "window": 10},
                **selector,
            },
        }
    )


def _frames() -> list[Frame]:
    with open_source(KITTI, vehicle_id="veh-t") as src:  # type: ignore[attr-defined]
        return [f for f in src.frames() if isinstance(f, Frame)]


def _sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_selected_frames_are_spooled_as_decodable_envelopes(tmp_path: Path) -> None:
    cfg = _config(tmp_path, diversity="none")
    registry = CollectorRegistry()
    spool = Spool(tmp_path / "spool.sqlite", max_bytes=64 * 2**20)
    parts = build_pipeline(cfg, registry=registry, spool=spool)
    frames = _frames()
    rows = [parts.pipeline.process(f) for f in frames]
    assert [r.selected for r in rows] == [True, True, True]
    assert {r.reason for r in rows} == {"selected"}
    entries = spool.lease(10, 2**30)
    assert len(entries) == 3
    by_key = {e.frame_key: e for e in entries}
    frame = frames[1]
    env = decode_frame(by_key[f"veh-t/{frame.drive_id}/{frame.seq:06d}"].payload)
    assert env.cameras[0].data == frame.cameras[0].encoded  # shipped as recorded, not re-encoded
    assert frame.lidar is not None
    assert env.lidar is not None
    cloud = decode_lidar(env.lidar)
    assert np.max(np.abs(cloud.points[:, :3] - frame.lidar.points[:, :3])) <= 0.0006
    assert env.selection.score == pytest.approx(rows[1].score)
    assert {m.name for m in env.models} == {"tiny-camera", "tiny-lidar"}
    assert _sample(registry, "fleetal_edge_frames_selected_total") == 3
    assert _sample(registry, "fleetal_edge_spool_frames") == 3
    assert (
        _sample(
            registry,
            "fleetal_edge_model_info",
            kind="lidar",
            model="tiny-lidar",
            version="tiny-lidar-1",
            sha256=parts.pipeline.scorer.lidar.current.runner.sha256[:12],  # type: ignore[union-attr]
            provider="CPUExecutionProvider",
        )
        == 1
    )
    spool.close()


def test_bad_input_is_a_counted_row_and_the_loop_goes_on(tmp_path: Path) -> None:
    cfg = _config(tmp_path, diversity="none")
    cfg = dataclasses.replace(
        cfg, quality=dataclasses.replace(cfg.quality, on_bad_sensor="drop_frame")
    )
    registry = CollectorRegistry()
    parts = build_pipeline(cfg, registry=registry, spool=None)
    good = _frames()[0]
    black_cam = dataclasses.replace(
        good.cameras[0], image=np.zeros_like(good.cameras[0].image), encoded=None
    )
    black = dataclasses.replace(good, seq=10, cameras=(black_cam,))
    error = SourceError(
        drive_id=good.drive_id,
        seq=11,
        timestamp_ns=None,
        sensor="velodyne",
        path="x.bin",
        reason=SourceErrorReason.BAD_SIZE,
        message="x.bin: size 7 is not a multiple of 16",
    )
    rows = [parts.pipeline.process(item) for item in (black, error, good)]
    assert [r.reason for r in rows] == ["quality_image_dark", "source_bad_size", "selected"]
    assert _sample(registry, "fleetal_edge_frames_in_total") == 3
    assert _sample(registry, "fleetal_edge_frames_scored_total") == 1
    for reason in ("quality_image_dark", "source_bad_size"):
        assert _sample(registry, "fleetal_edge_frames_dropped_total", reason=reason) == 1
    assert _sample(registry, "fleetal_edge_quality_issues_total", reason="image_dark") == 1


def test_a_spool_failure_unselects_the_frame_and_is_counted(tmp_path: Path) -> None:
    cfg = _config(tmp_path, diversity="none")
    registry = CollectorRegistry()

    class FullSpool(Spool):
        def put(  # type: ignore[override]
            self, frame_key: str, payload: bytes, score: float, *, content_digest: str = ""
        ) -> object:
            raise SpoolError("disk full", path=self.path, kind="full")

    spool = FullSpool(tmp_path / "spool.sqlite", max_bytes=2**20)
    parts = build_pipeline(cfg, registry=registry, spool=spool)
    row = parts.pipeline.process(_frames()[0])
    assert not row.selected
    assert row.reason == "spool_error"
    assert _sample(registry, "fleetal_edge_frames_dropped_total", reason="spool_error") == 1
    assert _sample(registry, "fleetal_edge_frames_selected_total") == 0
    # the selector was told the frame was not selected: the next frame is still decided
    assert parts.pipeline.process(_frames()[1]).reason == "spool_error"
    spool.close()


def test_committee_method_on_a_model_without_committee_falls_back(tmp_path: Path) -> None:
    cam = build_camera(tmp_path / "camera.onnx")  # no committee axis
    cfg = load_agent_config(
        data={
            "models": {"camera": str(cam)},
            "selector": {"uncertainty_method": "bald", "budget": {"target_rate": 0.5}},
        }
    )
    parts = build_pipeline(cfg, registry=CollectorRegistry(), spool=None)
    row = parts.pipeline.process(_frames()[0])
    assert row.reason != "model_error"
    assert 0.0 <= row.components["camera"] <= 1.0


def test_a_frame_missing_one_sensor_file_is_scored_on_the_rest_and_counted(
    tmp_path: Path,
) -> None:
    import shutil

    root = tmp_path / "training"
    shutil.copytree(KITTI / "training" / "image_2", root / "image_2")
    shutil.copytree(KITTI / "training" / "velodyne", root / "velodyne")
    missing = root / "image_2" / "000002.png"
    missing.unlink()
    registry = CollectorRegistry()
    parts = build_pipeline(_config(tmp_path, diversity="none"), registry=registry, spool=None)
    with open_source(tmp_path, vehicle_id="veh-t") as src:  # type: ignore[attr-defined]
        rows = [parts.pipeline.process(item) for item in src.frames()]
    assert [r.score is not None for r in rows] == [True, True, True]
    (problem,) = rows[2].problems
    assert (problem.outcome, problem.reason, problem.path) == (
        "sensor_dropped",
        "source_missing_file",
        str(missing),
    )
    assert rows[2].files == (str(root / "velodyne" / "000002.bin"), str(missing))
    labels = {"reason": "missing_file"}
    assert registry.get_sample_value("fleetal_edge_sensor_files_dropped_total", labels) == 1
    assert _sample(registry, "fleetal_edge_frames_scored_total") == 3


def test_two_frames_claiming_one_key_are_a_counted_conflict(tmp_path: Path) -> None:
    cfg = _config(tmp_path, diversity="none")
    registry = CollectorRegistry()
    spool = Spool(tmp_path / "spool.sqlite", max_bytes=64 * 2**20)
    parts = build_pipeline(cfg, registry=registry, spool=spool)
    first, other, _ = _frames()
    assert parts.pipeline.process(first).selected
    assert parts.pipeline.process(first).selected  # the same frame again: a duplicate, fine
    impostor = dataclasses.replace(other, seq=first.seq)  # another frame, the same key
    row = parts.pipeline.process(impostor)
    assert not row.selected
    assert row.reason == "spool_key_conflict"
    assert _sample(registry, "fleetal_edge_frames_dropped_total", reason="spool_key_conflict") == 1
    assert len(spool.keys()) == 1
    spool.close()


def test_a_model_swap_tells_the_selector(tmp_path: Path) -> None:
    """The rollout's swap hook (``refresh_models``) refreshes the selector's score window."""
    cfg = _config(tmp_path)
    parts = build_pipeline(cfg, registry=CollectorRegistry(), spool=None)
    selector = parts.pipeline.selector
    assert isinstance(selector, StreamSelector)
    parts.pipeline.refresh_models()  # nothing changed: not a swap
    assert selector.budget.model_swaps == 0
    slot = parts.pipeline.scorer.camera
    assert slot is not None
    slot.swap(build_camera(tmp_path / "camera-2.onnx", version="tiny-camera-2"), None)
    parts.pipeline.refresh_models()
    assert selector.budget.model_swaps == 1
