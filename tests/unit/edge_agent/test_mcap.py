"""The MCAP / ROS 2 reader on a recording this test writes with mcap-ros2-support.

Sensor content is real: a KITTI object sweep (subsampled) as PointCloud2, the KITTI
image (downscaled) as raw rgb8 Image, a nuScenes JPEG (downscaled, re-encoded) as
CompressedImage, and the real KITTI raw OXTS fix as NavSatFix. Timing is synthetic:
LiDAR at 10 Hz, cameras 8-15 ms later, fixes at 5 Hz.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mcap_ros2.writer import Writer
from PIL import Image

from edge_agent.errors import SourceOpenError
from edge_agent.frame import Frame, SourceError, SourceErrorReason
from edge_agent.sources import McapSource, SourceOptions, open_source

DATA = Path(__file__).resolve().parents[3] / "data"
SEP = "=" * 80
TIME = "int32 sec\nuint32 nanosec"
HEADER = "builtin_interfaces/Time stamp\nstring frame_id"
POINTFIELD = (
    "uint8 INT8=1\nuint8 UINT8=2\nuint8 INT16=3\nuint8 UINT16=4\nuint8 INT32=5\n"
    "uint8 UINT32=6\nuint8 FLOAT32=7\nuint8 FLOAT64=8\n"
    "string name\nuint32 offset\nuint8 datatype\nuint32 count"
)
NAVSATSTATUS = "int8 STATUS_NO_FIX=-1\nint8 STATUS_FIX=0\nint8 status\nuint16 service"


def _msgdef(main: str, *deps: tuple[str, str]) -> str:
    return "\n".join([main, *(f"{SEP}\nMSG: {name}\n{text}" for name, text in deps)])


_STD = (("std_msgs/Header", HEADER), ("builtin_interfaces/Time", TIME))
IMAGE_DEF = _msgdef(
    "std_msgs/Header header\nuint32 height\nuint32 width\nstring encoding\n"
    "uint8 is_bigendian\nuint32 step\nuint8[] data",
    *_STD,
)
COMPRESSED_DEF = _msgdef("std_msgs/Header header\nstring format\nuint8[] data", *_STD)
PC2_DEF = _msgdef(
    "std_msgs/Header header\nuint32 height\nuint32 width\nsensor_msgs/PointField[] fields\n"
    "bool is_bigendian\nuint32 point_step\nuint32 row_step\nuint8[] data\nbool is_dense",
    *_STD,
    ("sensor_msgs/PointField", POINTFIELD),
)
NAVSAT_DEF = _msgdef(
    "std_msgs/Header header\nsensor_msgs/NavSatStatus status\nfloat64 latitude\n"
    "float64 longitude\nfloat64 altitude\nfloat64[9] position_covariance\n"
    "uint8 position_covariance_type",
    *_STD,
    ("sensor_msgs/NavSatStatus", NAVSATSTATUS),
)

T0 = 1_700_000_000_000_000_000


def _header(t: int, frame_id: str) -> dict[str, Any]:
    return {
        "stamp": {"sec": t // 1_000_000_000, "nanosec": t % 1_000_000_000},
        "frame_id": frame_id,
    }


def _real_pieces() -> tuple[np.ndarray, np.ndarray, bytes, list[float]]:
    pts = np.fromfile(DATA / "kitti_object/training/velodyne/000000.bin", dtype="<f4")
    pts = pts.reshape(-1, 4)[::50].copy()
    img = Image.open(DATA / "kitti_object/training/image_2/000000.png").convert("RGB")
    rgb = np.asarray(img.resize((124, 37)))
    jpg_src = next((DATA / "nuscenes_sample").glob("*CAM_FRONT__*.jpg"))
    buf = io.BytesIO()
    Image.open(jpg_src).resize((160, 90)).save(buf, format="JPEG", quality=85)
    oxts = (DATA / "kitti_raw_2011_09_26_drive_0001_meta/oxts/data/0000000000.txt").read_text()
    return pts, rgb, buf.getvalue(), [float(v) for v in oxts.split()[:3]]


def write_recording(
    path: Path, n: int = 4, bad: dict[int, str] | None = None, chunk_size: int = 1 << 20
) -> None:
    """``bad``: sweep index -> 'short_cloud' | 'bad_encoding'."""
    bad = bad or {}
    pts, rgb, jpg, (lat, lon, alt) = _real_pieces()
    with path.open("wb") as fh:
        w = Writer(fh, chunk_size=chunk_size)
        s_img = w.register_msgdef("sensor_msgs/msg/Image", IMAGE_DEF)
        s_jpg = w.register_msgdef("sensor_msgs/msg/CompressedImage", COMPRESSED_DEF)
        s_pc2 = w.register_msgdef("sensor_msgs/msg/PointCloud2", PC2_DEF)
        s_fix = w.register_msgdef("sensor_msgs/msg/NavSatFix", NAVSAT_DEF)
        events: list[tuple[int, str, Any, dict[str, Any]]] = []
        for i in range(n):
            t = T0 + i * 100_000_000
            data = pts.tobytes()
            if bad.get(i) == "short_cloud":
                data = data[: len(data) // 2]
            cloud = {
                "header": _header(t, "velodyne"),
                "height": 1,
                "width": len(pts),
                "fields": [
                    {"name": name, "offset": 4 * k, "datatype": 7, "count": 1}
                    for k, name in enumerate(("x", "y", "z", "intensity"))
                ],
                "is_bigendian": False,
                "point_step": 16,
                "row_step": 16 * len(pts),
                "data": data,
                "is_dense": True,
            }
            events.append((t + 1_000_000, "/velodyne_points", s_pc2, cloud))
            t_raw = t + 8_000_000
            image = {
                "header": _header(t_raw, "cam2"),
                "height": rgb.shape[0],
                "width": rgb.shape[1],
                "encoding": "16UC1" if bad.get(i) == "bad_encoding" else "rgb8",
                "is_bigendian": 0,
                "step": rgb.shape[1] * 3,
                "data": rgb.tobytes(),
            }
            events.append((t_raw + 2_000_000, "/cam2/image_raw", s_img, image))
            t_jpg = t + 15_000_000
            comp = {"header": _header(t_jpg, "front"), "format": "jpeg", "data": jpg}
            events.append((t_jpg + 3_000_000, "/front/compressed", s_jpg, comp))
        for k in range(n // 2 + 1):
            t = T0 + k * 200_000_000
            fix = {
                "header": _header(t, "gps"),
                "status": {"status": 0, "service": 1},
                # Northwards at 10 m/s: 2 m between 5 Hz fixes.
                "latitude": lat + np.degrees(2.0 * k / 6_378_137.0),
                "longitude": lon,
                "altitude": alt,
                "position_covariance": [0.0] * 9,
                "position_covariance_type": 0,
            }
            events.append((t + 500_000, "/gps/fix", s_fix, fix))
        for log_time, topic, schema, msg in sorted(events, key=lambda e: e[0]):
            w.write_message(topic, schema, msg, log_time=log_time, publish_time=log_time)
        w.finish()


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mcap") / "drive_01.mcap"
    write_recording(path)
    return path


def test_reads_every_sensor_type(recording: Path) -> None:
    src = open_source(recording, vehicle_id="car-1")
    assert isinstance(src, McapSource)
    assert src.lidar_topic == "/velodyne_points"
    assert src.camera_topics == ("/cam2/image_raw", "/front/compressed")
    items = list(src.frames())
    src.close()
    assert all(isinstance(x, Frame) for x in items)
    assert len(items) == 4
    frames = [x for x in items if isinstance(x, Frame)]
    assert [f.seq for f in frames] == [0, 1, 2, 3]
    assert [f.timestamp_ns for f in frames] == [T0 + i * 100_000_000 for i in range(4)]
    pts, rgb, jpg, _ = _real_pieces()
    for f in frames:
        assert f.drive_id == "drive_01"
        assert f.vehicle_id == "car-1"
        assert f.lidar is not None
        assert f.lidar.fields == ("x", "y", "z", "intensity")
        assert np.array_equal(f.lidar.points, pts)
        # Named safely by construction (a "/" stopped ingest), the topic kept as the source.
        assert f.camera_names == ("cam2.image_raw", "front.compressed")
        raw = f.camera("cam2.image_raw")
        comp = f.camera("front.compressed")
        assert raw is not None
        assert comp is not None
        assert (raw.source, comp.source) == ("/cam2/image_raw", "/front/compressed")
        assert np.array_equal(raw.image, rgb)
        assert raw.encoded is None
        assert raw.timestamp_ns - f.timestamp_ns == 8_000_000  # header stamp, not log time
        assert comp.encoding == "jpeg"
        assert comp.encoded == jpg
        assert comp.image.shape == (90, 160, 3)
        assert f.pose is not None
        assert f.pose.lat_lon_alt is not None
    # Interpolated between 5 Hz fixes: 1 m north per 100 ms frame.
    north = [f.pose.position_m[1] for f in frames if f.pose]
    assert north == pytest.approx([0.0, 1.0, 2.0, 3.0], abs=0.01)


def test_mcap_frames_encode_into_valid_envelopes(recording: Path) -> None:
    """Every MCAP camera used to be named by its topic, which the wire contract refuses."""
    from edge_agent.encoder import StrategyInfo, encode_frame
    from schemas.wire import decode_frame
    from selector.decision import Decision, Reason

    frame = next(f for f in McapSource(recording, SourceOptions()).frames() if isinstance(f, Frame))
    decision = Decision(selected=True, score=0.9, threshold=0.5, reason=Reason.SELECTED, seq=0)
    raw = encode_frame(frame, decision, strategy=StrategyInfo("entropy", "0" * 64), models=())
    names = [c.name for c in decode_frame(raw).cameras]
    assert sorted(names) == ["cam2.image_raw", "front.compressed"]


def test_cameras_selected_by_name_or_topic(recording: Path) -> None:
    for wanted in ("front.compressed", "/front/compressed"):
        src = McapSource(recording, SourceOptions(cameras=(wanted,)))
        assert src.camera_topics == ("/front/compressed",)


def test_tolerance_and_camera_selection(recording: Path) -> None:
    opts = SourceOptions(sync_tolerance_ns=10_000_000, cameras=("/front/compressed",))
    frames = [f for f in McapSource(recording, opts).frames() if isinstance(f, Frame)]
    # The compressed camera is 15 ms after each sweep: outside a 10 ms tolerance.
    assert len(frames) == 4
    assert all(f.cameras == () for f in frames)


def test_bad_messages_become_errors_and_later_frames_still_come(tmp_path: Path) -> None:
    path = tmp_path / "bad.mcap"
    write_recording(path, n=4, bad={1: "short_cloud", 2: "bad_encoding"})
    items = list(McapSource(path).frames())
    assert [type(x).__name__ for x in items] == ["Frame", "SourceError", "SourceError", "Frame"]
    short, enc = (x for x in items if isinstance(x, SourceError))
    assert short.reason is SourceErrorReason.BAD_SIZE
    assert short.sensor == "/velodyne_points"
    assert "truncated" in short.message
    assert str(path) in short.message
    assert enc.reason is SourceErrorReason.BAD_CONTENT
    assert "16UC1" in enc.message


def test_truncated_file_yields_what_it_has_then_an_error(tmp_path: Path) -> None:
    full = tmp_path / "full.mcap"
    write_recording(full, n=4, chunk_size=4096)  # small chunks: a cut loses only the tail
    cut = tmp_path / "cut.mcap"
    blob = full.read_bytes()
    cut.write_bytes(blob[: int(len(blob) * 0.8)])
    items = list(McapSource(cut).frames())
    assert isinstance(items[-1], SourceError)
    assert items[-1].reason is SourceErrorReason.TRUNCATED
    assert "mcap recover" in items[-1].message
    frames = [x for x in items if isinstance(x, Frame)]
    assert 1 <= len(frames) < 4
    assert frames[0].seq == 0


def test_not_an_mcap_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mcap"
    junk.write_bytes(b"definitely not mcap" * 100)
    with pytest.raises(SourceOpenError, match=r"junk\.mcap"):
        McapSource(junk)
