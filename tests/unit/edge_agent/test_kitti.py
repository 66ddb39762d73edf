"""KITTI readers on the real object frames and on a raw drive built from real pieces.

The raw drive in ``tmp_path`` is composed, not recorded as a whole: its timestamps are the
real ones of drive 2011_09_26_0001 (data/kitti_raw_..._meta), its images and sweeps are the
three real KITTI object frames used in turn, and its OXTS records are the one real record
of that drive dead-reckoned forward with its own velocity (vn, ve) to the later timestamps.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge_agent.frame import Frame, SourceError, SourceErrorReason
from edge_agent.sources import (
    KittiObjectSource,
    KittiRawSource,
    SourceOptions,
    detect_layout,
    open_source,
)
from edge_agent.sources.kitti import parse_kitti_timestamps

DATA = Path(__file__).resolve().parents[3] / "data"
OBJECT = DATA / "kitti_object" / "training"
RAW_META = DATA / "kitti_raw_2011_09_26_drive_0001_meta"
EARTH_R = 6_378_137.0


def _frames(items: list[Frame | SourceError]) -> list[Frame]:
    return [f for f in items if isinstance(f, Frame)]


def _errors(items: list[Frame | SourceError]) -> list[SourceError]:
    return [f for f in items if isinstance(f, SourceError)]


def build_raw_drive(root: Path, n: int = 6, cameras: tuple[str, ...] = ("image_02",)) -> Path:
    drive = root / "2011_09_26_drive_0001_sync"
    stems = ("000000", "000001", "000002")
    for sensor in ("velodyne_points", "oxts", *cameras):
        (drive / sensor / "data").mkdir(parents=True)
    for name in ("timestamps.txt", "timestamps_start.txt", "timestamps_end.txt"):
        shutil.copy(RAW_META / "velodyne_points" / name, drive / "velodyne_points" / name)
    shutil.copy(RAW_META / "oxts" / "timestamps.txt", drive / "oxts" / "timestamps.txt")
    shutil.copy(RAW_META / "oxts" / "dataformat.txt", drive / "oxts" / "dataformat.txt")
    for cam in cameras:
        # image_03 has no real timestamps here: reuse image_02's (same trigger in KITTI).
        shutil.copy(RAW_META / "image_02" / "timestamps.txt", drive / cam / "timestamps.txt")
    record = (RAW_META / "oxts" / "data" / "0000000000.txt").read_text().split()
    lat0, lon0 = float(record[0]), float(record[1])
    vn, ve = float(record[6]), float(record[7])
    oxts_ts = parse_kitti_timestamps(drive / "oxts" / "timestamps.txt")
    for i in range(n):
        src = stems[i % 3]
        shutil.copy(
            OBJECT / "velodyne" / f"{src}.bin", drive / "velodyne_points" / "data" / f"{i:010d}.bin"
        )
        for cam in cameras:
            shutil.copy(OBJECT / "image_2" / f"{src}.png", drive / cam / "data" / f"{i:010d}.png")
        dt = (oxts_ts[i] - oxts_ts[0]) / 1e9
        rec = list(record)
        rec[0] = repr(lat0 + math.degrees(vn * dt / EARTH_R))
        rec[1] = repr(lon0 + math.degrees(ve * dt / (EARTH_R * math.cos(math.radians(lat0)))))
        (drive / "oxts" / "data" / f"{i:010d}.txt").write_text(" ".join(rec) + "\n")
    # Only n frames have data: cut every timestamps file to n lines.
    for ts_file in drive.glob("*/timestamps*.txt"):
        lines = ts_file.read_text().splitlines()[:n]
        ts_file.write_text("\n".join(lines) + "\n")
    return drive


def test_object_layout_real_frames() -> None:
    with KittiObjectSource(DATA / "kitti_object") as src:
        items = list(src.frames())
    frames = _frames(items)
    assert len(frames) == 3
    assert not _errors(items)
    assert [f.seq for f in frames] == [0, 1, 2]
    assert [f.timestamp_ns for f in frames] == [0, 100_000_000, 200_000_000]
    for f in frames:
        assert f.lidar is not None
        assert f.pose is None
        assert 110_000 <= f.lidar.num_points <= 127_000
        assert f.lidar.points.shape[1] == 4
        assert f.lidar.points.dtype == np.float32
        assert f.lidar.fields == ("x", "y", "z", "reflectance")
        (cam,) = f.cameras
        assert cam.name == "image_2"
        assert cam.encoding == "png"
        assert cam.image.dtype == np.uint8
        assert cam.image.shape[2] == 3
        assert 370 <= cam.height <= 375
        assert 1224 <= cam.width <= 1242
        assert cam.encoded is not None
        assert cam.encoded[:4] == b"\x89PNG"
        assert not cam.image.flags.writeable
        assert not f.lidar.points.flags.writeable
    assert frames[0].drive_id == "kitti_object_training"


def test_real_raw_timestamps_parse_monotonic() -> None:
    for sensor in ("image_02", "velodyne_points", "oxts"):
        ts = parse_kitti_timestamps(RAW_META / sensor / "timestamps.txt")
        assert ts.size == 108
        assert np.all(ts > 0)
        steps = np.diff(ts)
        assert np.all(steps > 0)
        assert 0.09e9 < np.median(steps) < 0.11e9  # 10 Hz
    first = parse_kitti_timestamps(RAW_META / "velodyne_points" / "timestamps.txt")[0]
    assert first == 1317042145951199337  # 2011-09-26 13:02:25.951199337, read as UTC


def test_raw_drive_built_from_real_pieces(tmp_path: Path) -> None:
    drive = build_raw_drive(tmp_path, n=6, cameras=("image_02", "image_03"))
    src = open_source(drive, vehicle_id="car-7")
    assert isinstance(src, KittiRawSource)
    assert len(src) == 6
    items = list(src.frames())
    src.close()
    frames = _frames(items)
    assert len(frames) == 6
    assert not _errors(items)
    ts = np.array([f.timestamp_ns for f in frames])
    assert np.all(np.diff(ts) > 0)
    real = parse_kitti_timestamps(RAW_META / "velodyne_points" / "timestamps.txt")[:6]
    assert ts.tolist() == real.tolist()
    for f in frames:
        assert f.vehicle_id == "car-7"
        assert f.drive_id == "2011_09_26_drive_0001_sync"
        assert f.camera_names == ("image_02", "image_03")
        assert f.lidar is not None
        assert 110_000 <= f.lidar.num_points <= 127_000
        for cam in f.cameras:  # camera within 50 ms of the sweep it belongs to
            assert abs(cam.timestamp_ns - f.timestamp_ns) <= 50_000_000
        assert f.pose is not None
        assert f.pose.orientation_wxyz is not None
        assert f.pose.lat_lon_alt is not None
    # The vehicle moves at the real record's ground speed (~13.2 m/s). The first sweep is
    # 13 ms older than the first OXTS record: its pose is that record's (clamped, within
    # the tolerance), so the speed is measured from the second frame on.
    p = np.array([f.pose.position_m for f in frames if f.pose])
    speed = np.linalg.norm(np.diff(p[:, :2], axis=0), axis=1) / (np.diff(ts) / 1e9)
    assert np.allclose(speed[1:], math.hypot(6.811441479104, 11.275641809511), rtol=0.02)
    assert p[0] == pytest.approx((0.0, 0.0, 0.0), abs=1e-6)


def test_raw_drive_corrupt_files_become_errors_and_the_loop_goes_on(tmp_path: Path) -> None:
    drive = build_raw_drive(tmp_path, n=5)
    png = drive / "image_02" / "data" / "0000000001.png"
    png.write_bytes(png.read_bytes()[:5000])  # truncated PNG
    binf = drive / "velodyne_points" / "data" / "0000000003.bin"
    binf.write_bytes(binf.read_bytes()[:-6])  # not a multiple of 16 bytes
    (drive / "velodyne_points" / "data" / "0000000004.bin").unlink()
    items = list(KittiRawSource(drive).frames())
    assert [type(x).__name__ for x in items] == [
        "Frame",
        "SourceError",
        "Frame",
        "SourceError",
        "SourceError",
    ]
    trunc, size, missing = _errors(items)
    assert trunc.reason is SourceErrorReason.TRUNCATED
    assert trunc.seq == 1
    assert trunc.path == str(png)
    assert str(png) in trunc.message
    assert "re-copy" in trunc.message
    assert trunc.sensor == "image_02"
    assert size.reason is SourceErrorReason.BAD_SIZE
    assert size.seq == 3
    assert "multiple of 16" in size.message
    assert str(binf) in size.message
    assert missing.reason is SourceErrorReason.MISSING_FILE
    assert [f.seq for f in _frames(items)] == [0, 2]


def test_raw_drive_camera_out_of_tolerance_is_left_out(tmp_path: Path) -> None:
    drive = build_raw_drive(tmp_path, n=3)
    # Cameras trail the sweeps by ~10 ms; a 5 ms tolerance leaves every frame camera-less.
    items = list(KittiRawSource(drive, SourceOptions(sync_tolerance_ns=5_000_000)).frames())
    frames = _frames(items)
    assert len(frames) == 3
    assert all(f.cameras == () and f.lidar for f in frames)


def test_raw_drive_camera_selection(tmp_path: Path) -> None:
    drive = build_raw_drive(tmp_path, n=2, cameras=("image_02", "image_03"))
    frames = _frames(list(KittiRawSource(drive, SourceOptions(cameras=("image_03",))).frames()))
    assert [f.camera_names for f in frames] == [("image_03",), ("image_03",)]


def _object_copy(root: Path, lidar_dir: str = "velodyne") -> Path:
    shutil.copytree(OBJECT / "image_2", root / "image_2")
    shutil.copytree(OBJECT / "velodyne", root / lidar_dir)
    return root


def test_object_layout_corrupt_bin_frame_is_scored_on_its_image(tmp_path: Path) -> None:
    root = _object_copy(tmp_path / "training")
    bad = root / "velodyne" / "000001.bin"
    bad.write_bytes(b"\0" * 15)
    items = list(KittiObjectSource(tmp_path).frames())
    assert [type(x).__name__ for x in items] == ["Frame", "Frame", "Frame"]
    frame = _frames(items)[1]
    assert frame.lidar is None
    assert frame.camera_names == ("image_2",)
    (problem,) = frame.problems
    assert problem.reason is SourceErrorReason.BAD_SIZE
    assert problem.path == str(bad)


def test_object_frame_with_lidar_but_no_image_keeps_its_sweep(tmp_path: Path) -> None:
    root = _object_copy(tmp_path / "training")
    missing = root / "image_2" / "000001.png"
    missing.unlink()
    items = list(KittiObjectSource(tmp_path).frames())
    assert not _errors(items)
    frames = _frames(items)
    assert [f.seq for f in frames] == [0, 1, 2]
    assert frames[1].lidar is not None
    assert frames[1].lidar.path == str(root / "velodyne" / "000001.bin")
    assert frames[1].cameras == ()
    assert [(e.reason, e.path) for e in frames[1].problems] == [
        (SourceErrorReason.MISSING_FILE, str(missing))
    ]
    assert not frames[0].problems
    # nothing readable: two bad files -> a sensorless frame naming both; one -> a SourceError
    (root / "velodyne" / "000002.bin").write_bytes(b"\0" * 7)
    (root / "image_2" / "000002.png").write_bytes(b"not a png")
    last = list(KittiObjectSource(tmp_path).frames())[2]
    assert isinstance(last, Frame)
    assert last.lidar is None
    assert last.cameras == ()
    assert {e.reason for e in last.problems} == {
        SourceErrorReason.BAD_SIZE,
        SourceErrorReason.DECODE_FAILED,
    }


def test_object_velodyne_reduced_is_read(tmp_path: Path) -> None:
    root = _object_copy(tmp_path / "kitti_object" / "training", lidar_dir="velodyne_reduced")
    assert detect_layout(tmp_path / "kitti_object") == "kitti_object"
    frames = _frames(list(open_source(tmp_path / "kitti_object").frames()))
    assert len(frames) == 3
    for f in frames:
        assert f.lidar is not None
        assert f.lidar.path is not None
        assert f.lidar.path.startswith(str(root / "velodyne_reduced"))
        assert 110_000 <= f.lidar.num_points <= 127_000
    only_lidar = tmp_path / "lidar_only" / "training"
    shutil.copytree(OBJECT / "velodyne", only_lidar / "velodyne_reduced")
    assert detect_layout(tmp_path / "lidar_only") == "kitti_object"
    assert len(_frames(list(KittiObjectSource(tmp_path / "lidar_only").frames()))) == 3


def test_object_root_reads_training_then_testing(tmp_path: Path) -> None:
    root = tmp_path / "kitti_object"
    _object_copy(root / "training")
    _object_copy(root / "testing")
    src = KittiObjectSource(root)
    assert len(src) == 6
    frames = _frames(list(src.frames()))
    assert [f.seq for f in frames] == list(range(6))
    assert [f.timestamp_ns for f in frames] == [i * 100_000_000 for i in range(6)]
    assert {f.drive_id for f in frames} == {"kitti_object"}
    splits = [Path(f.lidar.path).parts[-3] for f in frames if f.lidar and f.lidar.path]
    assert splits == ["training"] * 3 + ["testing"] * 3
    assert src.stems[3] == "testing/000000"
    # one split given directly, or a root with only one: as before
    assert KittiObjectSource(root / "testing").drive_id == "kitti_object_testing"
    assert len(KittiObjectSource(root / "testing")) == 3


def test_raw_missing_everything_raises(tmp_path: Path) -> None:
    from edge_agent.errors import SourceOpenError

    with pytest.raises(SourceOpenError, match="velodyne_points"):
        KittiRawSource(tmp_path)
