"""The live spool-directory source: a bridge thread drops real frames, the source yields them."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edge_agent.errors import SourceOpenError
from edge_agent.frame import CameraImage, Frame, SourceError, SourceErrorReason
from edge_agent.sources import (
    FrameSource,
    KittiObjectSource,
    LiveSource,
    NuScenesSource,
    SourceOptions,
    SpoolDirSource,
    write_spool_frame,
)

DATA = Path(__file__).resolve().parents[3] / "data"


@pytest.fixture(scope="module")
def real_frames() -> list[Frame]:
    frames = [f for f in KittiObjectSource(DATA / "kitti_object").frames() if isinstance(f, Frame)]
    frames += [f for f in NuScenesSource(DATA / "nuscenes_sample").frames() if isinstance(f, Frame)]
    # Renumber as one live drive.
    return [
        Frame("car-3", "live", i, f.timestamp_ns, f.pose, f.cameras, f.lidar)
        for i, f in enumerate(frames)
    ]


def test_protocols() -> None:
    src = SpoolDirSource(DATA, idle_timeout_s=0)
    assert isinstance(src, LiveSource)
    assert isinstance(src, FrameSource)
    assert isinstance(KittiObjectSource(DATA / "kitti_object"), FrameSource)


def test_round_trip_and_ack(tmp_path: Path, real_frames: list[Frame]) -> None:
    for f in real_frames:
        write_spool_frame(tmp_path, f)
    (tmp_path / ".000000000099.npz.1.tmp").write_bytes(b"half written")  # ignored
    src = SpoolDirSource(
        tmp_path, SourceOptions(vehicle_id="car-3"), idle_timeout_s=0.0, on_consumed="move"
    )
    it = src.frames()
    first = next(it)
    assert isinstance(first, Frame)
    # Not acknowledged while the consumer holds it.
    assert (tmp_path / "000000000000.npz").exists()
    rest = list(it)
    got = [first, *rest]
    assert all(isinstance(x, Frame) for x in got)
    assert len(got) == 4
    for a, b in zip(real_frames, got, strict=True):
        assert isinstance(b, Frame)
        assert (b.vehicle_id, b.drive_id, b.seq, b.timestamp_ns) == (
            a.vehicle_id,
            a.drive_id,
            a.seq,
            a.timestamp_ns,
        )
        assert b.pose == a.pose
        assert b.camera_names == a.camera_names
        for ca, cb in zip(a.cameras, b.cameras, strict=True):
            assert cb.encoded == ca.encoded
            assert cb.encoding == ca.encoding
            assert np.array_equal(ca.image, cb.image)
            assert cb.timestamp_ns == ca.timestamp_ns
        assert a.lidar is not None
        assert b.lidar is not None
        assert np.array_equal(a.lidar.points, b.lidar.points)
        assert a.lidar.fields == b.lidar.fields
    assert sorted(p.name for p in (tmp_path / "done").iterdir()) == [
        f"{i:012d}.npz" for i in range(4)
    ]
    assert src.pending() == []


def test_raw_camera_and_delete(tmp_path: Path) -> None:
    img = np.full((16, 24, 3), 90, np.uint8)
    frame = Frame("v", "d", 7, 123, None, (CameraImage("cam", 120, img),), None)
    write_spool_frame(tmp_path, frame)
    (got,) = list(SpoolDirSource(tmp_path, idle_timeout_s=0).frames())
    assert isinstance(got, Frame)
    assert got.seq == 7
    assert got.cameras[0].encoded is None
    assert np.array_equal(got.cameras[0].image, img)
    assert not list(tmp_path.glob("*.npz"))
    assert not (tmp_path / "done").exists()


def test_bad_file_is_rejected_and_the_next_one_read(
    tmp_path: Path, real_frames: list[Frame]
) -> None:
    write_spool_frame(tmp_path, real_frames[0])
    (tmp_path / "000000000000.npz").rename(tmp_path / "000000000002.npz")
    (tmp_path / "000000000001.npz").write_bytes(b"PK\x03\x04 garbage")
    items = list(SpoolDirSource(tmp_path, idle_timeout_s=0).frames())
    assert [type(x).__name__ for x in items] == ["SourceError", "Frame"]
    err = items[0]
    assert isinstance(err, SourceError)
    assert err.reason is SourceErrorReason.DECODE_FAILED
    assert "000000000001.npz" in err.message
    assert "rejected/" in err.message
    assert (tmp_path / "rejected" / "000000000001.npz").exists()


def test_live_bridge_thread_and_stop(tmp_path: Path, real_frames: list[Frame]) -> None:
    src = SpoolDirSource(tmp_path, poll_interval_s=0.01)
    received: list[Frame | SourceError] = []

    def bridge() -> None:
        for f in real_frames[:3]:
            write_spool_frame(tmp_path, f)
            time.sleep(0.03)

    producer = threading.Thread(target=bridge)
    producer.start()
    t0 = time.monotonic()
    for item in src.frames():
        received.append(item)
        if len(received) == 3:
            src.stop()
    producer.join()
    assert [x.seq for x in received if isinstance(x, Frame)] == [0, 1, 2]
    assert time.monotonic() - t0 < 5
    # Stopping while waiting on an empty directory returns within a poll interval.
    idle = SpoolDirSource(tmp_path, poll_interval_s=10.0)
    threading.Timer(0.05, idle.stop).start()
    t0 = time.monotonic()
    assert list(idle.frames()) == []
    assert time.monotonic() - t0 < 2.0


def test_idle_timeout_with_fake_clock(tmp_path: Path) -> None:
    now = [0.0]

    def clock() -> float:
        now[0] += 1.0
        return now[0]

    src = SpoolDirSource(tmp_path, poll_interval_s=0.001, idle_timeout_s=3.0, clock=clock)
    assert list(src.frames()) == []
    assert now[0] >= 4.0


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(SourceOpenError, match="does not exist"):
        SpoolDirSource(tmp_path / "nope")


def test_folder_layout_with_pcd_and_bin(tmp_path: Path, real_frames: list[Frame]) -> None:
    # Frame 0 (KITTI) as folder + PCD (what a PCL-based bridge writes), frame 3 (nuScenes,
    # six JPEGs) as folder + raw float32, frame 1 as .npz: one spool may mix them.
    write_spool_frame(tmp_path, real_frames[0], layout="folder", lidar_format="pcd")
    write_spool_frame(tmp_path, real_frames[1])
    write_spool_frame(tmp_path, real_frames[3], layout="folder")
    assert (tmp_path / "000000000000" / "lidar.pcd").is_file()
    got = list(SpoolDirSource(tmp_path, idle_timeout_s=0).frames())
    assert [x.seq for x in got if isinstance(x, Frame)] == [0, 1, 3]
    for want, have in zip((real_frames[0], real_frames[1], real_frames[3]), got, strict=True):
        assert isinstance(have, Frame)
        assert want.lidar is not None
        assert have.lidar is not None
        assert have.lidar.fields[:3] == ("x", "y", "z")
        assert sorted(have.lidar.fields) == sorted(want.lidar.fields)
        order = [want.lidar.fields.index(f) for f in have.lidar.fields]
        assert np.array_equal(have.lidar.points, want.lidar.points[:, order])
        assert [c.encoded for c in have.cameras] == [c.encoded for c in want.cameras]
    assert list(tmp_path.iterdir()) == []  # all consumed and deleted


def test_folder_with_truncated_pcd_is_rejected(tmp_path: Path, real_frames: list[Frame]) -> None:
    entry = write_spool_frame(tmp_path, real_frames[0], layout="folder", lidar_format="pcd")
    pcd = entry / "lidar.pcd"
    pcd.write_bytes(pcd.read_bytes()[:4000])
    write_spool_frame(tmp_path, real_frames[1], layout="folder")
    items = list(SpoolDirSource(tmp_path, idle_timeout_s=0).frames())
    assert [type(x).__name__ for x in items] == ["SourceError", "Frame"]
    err = items[0]
    assert isinstance(err, SourceError)
    assert err.reason is SourceErrorReason.DECODE_FAILED
    assert "lidar.pcd" in err.message
    assert (tmp_path / "rejected" / "000000000000" / "lidar.pcd").is_file()
