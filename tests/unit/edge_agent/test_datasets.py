"""nuScenes, Argoverse 2 and comma2k19 readers on the real recordings in data/."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge_agent.errors import LayoutNotRecognisedError
from edge_agent.frame import Frame, SourceError, SourceErrorReason
from edge_agent.sources import (
    Av2Source,
    Comma2k19Source,
    KittiObjectSource,
    NuScenesSource,
    SourceOptions,
    detect_layout,
    open_source,
)
from edge_agent.sources.comma2k19 import load_comma_array
from edge_agent.sources.geo import quat_to_matrix

DATA = Path(__file__).resolve().parents[3] / "data"
NUSC = DATA / "nuscenes_sample"
AV2 = DATA / "av2_sensor" / "7fab2350-7eaf-3b7e-a39d-6937a4c1bede"
COMMA = DATA / "comma2k19_segment"
NUSC_CAMS = (
    "CAM_FRONT",
    "CAM_FRONT_RIGHT",
    "CAM_FRONT_LEFT",
    "CAM_BACK",
    "CAM_BACK_LEFT",
    "CAM_BACK_RIGHT",
)


def test_nuscenes_sample() -> None:
    items = list(NuScenesSource(NUSC).frames())
    (frame,) = items
    assert isinstance(frame, Frame)
    assert frame.drive_id == "n015-2018-07-24-11-22-45+0800"
    assert frame.timestamp_ns == 1_532_402_927_647_951_000
    assert frame.lidar is not None
    assert frame.lidar.points.shape == (34_688, 5)
    assert frame.lidar.fields == ("x", "y", "z", "intensity", "ring")
    assert set(frame.camera_names) == set(NUSC_CAMS)
    for cam in frame.cameras:
        assert cam.image.shape == (900, 1600, 3)
        assert cam.encoding == "jpeg"
        assert 0 <= frame.timestamp_ns - cam.timestamp_ns <= 50_000_000
    pose = frame.pose
    assert pose is not None
    assert pose.orientation_wxyz is not None
    assert pose.position_m[:2] == pytest.approx((411.30, 1180.89), abs=0.01)
    # Rotation back to a matrix gives the info file's ego2global rotation.
    info = json.loads(next(NUSC.glob("*.info.json")).read_text())
    e2g = np.array(info["data_list"][0]["ego2global"])
    assert np.allclose(quat_to_matrix(np.array(pose.orientation_wxyz)), e2g[:3, :3], atol=1e-6)


def test_nuscenes_camera_filter_and_tolerance() -> None:
    only = list(NuScenesSource(NUSC, SourceOptions(cameras=("CAM_FRONT",))).frames())
    assert isinstance(only[0], Frame)
    assert only[0].camera_names == ("CAM_FRONT",)
    # CAM_FRONT_LEFT is 43 ms before the sweep, CAM_BACK_LEFT 0.5 ms: a 20 ms tolerance
    # keeps the cameras that fired within 20 ms of the sweep.
    tight = list(NuScenesSource(NUSC, SourceOptions(sync_tolerance_ns=20_000_000)).frames())
    assert isinstance(tight[0], Frame)
    assert set(tight[0].camera_names) == {"CAM_BACK", "CAM_BACK_LEFT"}


def test_nuscenes_truncated_jpeg_is_an_error(tmp_path: Path) -> None:
    shutil.copytree(NUSC, tmp_path / "n")
    jpg = next((tmp_path / "n").glob("*CAM_FRONT__*.jpg"))
    jpg.write_bytes(jpg.read_bytes()[:20_000])
    (err,) = list(NuScenesSource(tmp_path / "n").frames())
    assert isinstance(err, SourceError)
    assert err.reason is SourceErrorReason.TRUNCATED
    assert err.sensor == "CAM_FRONT"
    assert jpg.name in err.message


def test_av2_log() -> None:
    src = open_source(AV2)
    assert isinstance(src, Av2Source)
    frames = [f for f in src.frames() if isinstance(f, Frame)]
    assert len(frames) == 2
    assert [f.timestamp_ns for f in frames] == [315966265259836000, 315966265360032000]
    for f in frames:
        assert f.lidar is not None
        assert 98_000 <= f.lidar.num_points <= 100_000
        assert f.lidar.points.dtype == np.float32
        assert f.lidar.points.shape[1] == 6
        assert f.lidar.fields[:3] == ("x", "y", "z")
        assert np.isfinite(f.lidar.points).all()
        assert f.cameras == ()
        assert f.pose is not None
        assert f.pose.orientation_wxyz is not None
        assert np.linalg.norm(f.pose.orientation_wxyz) == pytest.approx(1.0)
    a, b = (np.array(f.pose.position_m) for f in frames if f.pose)
    # 100 ms apart, the car creeps (~0.7 m/s): a few centimetres, not metres.
    assert 0.01 < np.linalg.norm(b - a) < 0.5


def test_av2_garbage_feather_is_an_error_and_the_next_sweep_is_read(tmp_path: Path) -> None:
    log = tmp_path / "log"
    shutil.copytree(AV2, log, ignore=shutil.ignore_patterns("annotations.feather"))
    first = sorted((log / "sensors" / "lidar").glob("*.feather"))[0]
    first.write_bytes(b"ARROW1\0\0 this is not a feather file" * 10)
    items = list(Av2Source(log).frames())
    assert [type(x).__name__ for x in items] == ["SourceError", "Frame"]
    err = items[0]
    assert isinstance(err, SourceError)
    assert err.reason is SourceErrorReason.DECODE_FAILED
    assert str(first) in err.message
    assert "re-copy" in err.message
    assert err.seq == 0


def test_av2_cameras_synced_when_present(tmp_path: Path) -> None:
    log = tmp_path / "log"
    shutil.copytree(AV2, log, ignore=shutil.ignore_patterns("annotations.feather"))
    cam = log / "sensors" / "cameras" / "ring_front_center"
    cam.mkdir(parents=True)
    jpg = next(NUSC.glob("*CAM_FRONT__*.jpg")).read_bytes()  # a real JPEG stands in
    # One image 20 ms after the first sweep, one 70 ms after the second (out of tolerance).
    (cam / "315966265279836000.jpg").write_bytes(jpg)
    (cam / "315966265430032000.jpg").write_bytes(jpg)
    frames = [f for f in Av2Source(log).frames() if isinstance(f, Frame)]
    assert [f.camera_names for f in frames] == [("ring_front_center",), ()]
    assert frames[0].cameras[0].timestamp_ns == 315966265279836000


def test_comma2k19_segment() -> None:
    src = open_source(COMMA)
    assert isinstance(src, Comma2k19Source)
    frames = [f for f in src.frames() if isinstance(f, Frame)]
    assert len(frames) == 1200
    ts = np.array([f.timestamp_ns for f in frames])
    assert np.all(np.diff(ts) > 0)
    assert np.allclose(np.diff(ts), 50_000_000, atol=2_000_000)  # 20 Hz, real +-1.3 ms jitter
    # GPS time -> UTC: 2018-08-02, like the rest of comma2k19.
    assert 1_533_168_000e9 < ts[0] < 1_533_254_400e9
    assert all(f.cameras == () and f.lidar is None for f in frames)
    pos = np.array([f.pose.position_m for f in frames if f.pose])
    assert pos.shape == (1200, 3)
    assert np.allclose(pos[0], 0.0)
    step = np.linalg.norm(np.diff(pos, axis=0), axis=1)
    length = step.sum()
    speed = step / (np.diff(ts) / 1e9)
    # This minute is a real expressway minute at ~61 km/h (17 m/s), about a kilometre,
    # agreeing with the log's own velocities.
    vel = load_comma_array(COMMA / "global_pose" / "frame_velocities")
    assert 900 < length < 1100
    assert abs(speed.mean() - np.linalg.norm(vel, axis=1).mean()) < 0.5
    assert 10 < np.median(speed) < 25
    assert speed.max() < 40
    lla = np.array([f.pose.lat_lon_alt for f in frames if f.pose and f.pose.lat_lon_alt])
    assert lla.shape == (1200, 3)
    assert 37.6 < lla[0, 0] < 37.8
    assert -122.6 < lla[0, 1] < -122.3
    # Orientation: the vehicle's x axis points where it drives, z axis up.
    rot = quat_to_matrix(np.array([f.pose.orientation_wxyz for f in frames if f.pose]))
    heading = np.diff(pos, axis=0)
    heading /= np.linalg.norm(heading, axis=1, keepdims=True)
    assert np.median(np.sum(rot[:-1, :, 0] * heading, axis=1)) > 0.99
    assert np.all(rot[:, 2, 2] > 0.95)


def test_detect_layout_on_real_data(tmp_path: Path) -> None:
    assert detect_layout(NUSC) == "nuscenes"
    assert detect_layout(AV2) == "av2"
    assert detect_layout(COMMA) == "comma2k19"
    assert detect_layout(DATA / "kitti_object") == "kitti_object"
    assert detect_layout(DATA / "kitti_raw_2011_09_26_drive_0001_meta") == "kitti_raw"
    assert isinstance(open_source(DATA / "kitti_object"), KittiObjectSource)
    with pytest.raises(LayoutNotRecognisedError, match="no known recording layout"):
        open_source(tmp_path)


def test_kitti_raw_meta_only_reports_missing_files() -> None:
    # The meta folder has the timestamps but not the data files: every frame is a
    # MISSING_FILE error naming the file, none stops the iteration.
    items = list(open_source(DATA / "kitti_raw_2011_09_26_drive_0001_meta").frames())
    assert len(items) == 108
    assert all(isinstance(x, SourceError) for x in items)
    assert {x.reason for x in items if isinstance(x, SourceError)} == {
        SourceErrorReason.MISSING_FILE
    }
