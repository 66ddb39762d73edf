"""The live spool-directory source: a bridge thread drops real frames, the source yields them."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from edge_agent.errors import SourceOpenError
from edge_agent.frame import CameraImage, Frame, SourceError, SourceErrorReason, content_digest
from edge_agent.metrics import AgentMetrics
from edge_agent.sources import (
    FrameSource,
    KittiObjectSource,
    LiveSource,
    NuScenesSource,
    SourceOptions,
    SpoolDirSource,
    write_spool_frame,
)
from edge_agent.spool import Spool
from schemas.messages import frame_key

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


def _as_bridge_without_drive_id(frames: list[Frame]) -> list[Frame]:
    """The frames as a bridge writes them that leaves ``drive_id`` out, seq from 0."""
    return [
        Frame("car-3", "", i, f.timestamp_ns, f.pose, f.cameras, f.lidar)
        for i, f in enumerate(frames)
    ]


def test_drives_without_a_drive_id_get_unique_ids_and_all_reach_the_spool(
    tmp_path: Path, real_frames: list[Frame]
) -> None:
    bridge = tmp_path / "bridge"
    bridge.mkdir()
    options = SourceOptions(vehicle_id="car-3")
    got: list[Frame] = []
    # drive 1 (KITTI frames), then the vehicle reboots: bridge and agent start again and the
    # bridge counts from 0 for drive 2 (the nuScenes frame and a KITTI one)
    for drive in (real_frames[:2], [real_frames[3], real_frames[2]]):
        for f in _as_bridge_without_drive_id(drive):
            write_spool_frame(bridge, f)
        src = SpoolDirSource(bridge, options, idle_timeout_s=0)
        got += [x for x in src.frames() if isinstance(x, Frame)]
    assert [f.seq for f in got] == [0, 1, 0, 1]
    first, second = got[0].drive_id, got[2].drive_id
    assert got[1].drive_id == first
    assert got[3].drive_id == second
    assert first != second
    assert first.startswith("bridge-")
    assert second.startswith("bridge-")
    # every frame keeps its own identity through the vehicle's spool
    with Spool(tmp_path / "spool.db", max_bytes=64 << 20) as spool:
        results = [
            spool.put(
                frame_key(f.vehicle_id, f.drive_id, f.seq),
                b"payload",
                0.5,
                content_digest=content_digest(f),
            )
            for f in got
        ]
        assert [r.status for r in results] == ["stored"] * 4
        assert len(spool.keys()) == 4


def test_a_restarted_agent_carries_on_with_its_drive(
    tmp_path: Path, real_frames: list[Frame]
) -> None:
    frames = _as_bridge_without_drive_id(real_frames[:3])
    write_spool_frame(tmp_path, frames[0])
    write_spool_frame(tmp_path, frames[1])
    it = SpoolDirSource(tmp_path, idle_timeout_s=0).frames()
    a = next(it)
    b = next(it)  # the agent dies holding seq 1: it was never acknowledged
    assert isinstance(a, Frame)
    assert isinstance(b, Frame)
    assert (tmp_path / "000000000001.npz").exists()
    write_spool_frame(tmp_path, frames[2])
    again = [x for x in SpoolDirSource(tmp_path, idle_timeout_s=0).frames()]
    assert [x.seq for x in again if isinstance(x, Frame)] == [1, 2]
    assert {x.drive_id for x in again if isinstance(x, Frame)} == {a.drive_id} == {b.drive_id}


def test_the_drive_id_in_the_entry_wins(tmp_path: Path, real_frames: list[Frame]) -> None:
    write_spool_frame(tmp_path, real_frames[0])  # drive_id "live"
    (got,) = SpoolDirSource(tmp_path, idle_timeout_s=0).frames()
    assert isinstance(got, Frame)
    assert got.drive_id == "live"


def test_configured_cameras_and_the_sync_tolerance_apply(
    tmp_path: Path, real_frames: list[Frame], caplog: pytest.LogCaptureFixture
) -> None:
    nusc = real_frames[3]  # six cameras 0.5 to 43 ms before the sweep (real offsets)
    assert nusc.lidar is not None
    offsets = {c.name: (c.timestamp_ns - nusc.lidar.timestamp_ns) / 1e6 for c in nusc.cameras}
    write_spool_frame(tmp_path, nusc)
    only = SourceOptions(cameras=("CAM_FRONT", "CAM_BACK"))
    (got,) = SpoolDirSource(tmp_path, only, idle_timeout_s=0, on_consumed="move").frames()
    assert isinstance(got, Frame)
    assert got.camera_names == ("CAM_FRONT", "CAM_BACK")

    (tmp_path / "done" / "000000000003.npz").rename(tmp_path / "000000000003.npz")
    tight = SourceOptions(sync_tolerance_ns=20_000_000)
    src = SpoolDirSource(tmp_path, tight, idle_timeout_s=0)
    with caplog.at_level("WARNING", logger="edge_agent.sources.spool_dir"):
        (got,) = src.frames()
    assert isinstance(got, Frame)
    kept = {name for name, ms in offsets.items() if abs(ms) <= 20.0}
    assert set(got.camera_names) == kept
    assert 0 < len(kept) < len(offsets)
    assert src.counts["camera_out_of_sync"] == len(offsets) - len(kept)
    registry = CollectorRegistry()
    AgentMetrics(registry, vehicle_id="car-3").watch_source(lambda: src.counts)
    assert registry.get_sample_value(
        "fleetal_edge_source_sensors_left_out_total", {"reason": "camera_out_of_sync"}
    ) == len(offsets) - len(kept)
    assert any("sync tolerance" in r.getMessage() for r in caplog.records)
