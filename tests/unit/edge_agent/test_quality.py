"""The quality gate on real camera images and LiDAR sweeps, and on spoiled copies of them."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from edge_agent.frame import CameraImage, Frame, LidarSweep
from edge_agent.quality import (
    QualityConfig,
    QualityGate,
    QualityReason,
    QualityRejection,
    RateLimitedLogger,
)
from edge_agent.sources import KittiObjectSource, NuScenesSource

DATA = Path(__file__).resolve().parents[3] / "data"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def real_frames() -> list[Frame]:
    frames = [f for f in KittiObjectSource(DATA / "kitti_object").frames() if isinstance(f, Frame)]
    frames += [f for f in NuScenesSource(DATA / "nuscenes_sample").frames() if isinstance(f, Frame)]
    assert len(frames) == 4
    return frames


@pytest.fixture(scope="module")
def nusc_front(real_frames: list[Frame]) -> CameraImage:
    cam = real_frames[3].camera("CAM_FRONT")
    assert cam is not None
    return cam


def _with(frame: Frame, **changes: object) -> Frame:
    return dataclasses.replace(frame, **changes)  # type: ignore[arg-type]


def test_real_frames_pass_untouched(real_frames: list[Frame]) -> None:
    gate = QualityGate()
    for frame in real_frames:
        assert gate.check(frame) is frame
    assert sum(gate.counts.values()) == 0
    assert gate.frames_checked == 4


def test_comma_preview_passes() -> None:
    img = np.asarray(Image.open(DATA / "comma2k19_segment" / "preview.png").convert("RGB"))
    assert QualityGate().check_image(CameraImage("road", 0, img)) is None


@pytest.mark.parametrize(
    ("spoil", "reason"),
    [
        ("black", QualityReason.IMAGE_DARK),
        ("dim", QualityReason.IMAGE_DARK),
        ("white", QualityReason.IMAGE_SATURATED),
        ("blur", QualityReason.IMAGE_BLURRED),
        ("tiny", QualityReason.IMAGE_INVALID),
    ],
)
def test_spoiled_images_are_rejected_with_their_reason(
    real_frames: list[Frame], nusc_front: CameraImage, spoil: str, reason: QualityReason
) -> None:
    img = nusc_front.image
    if spoil == "black":
        bad = np.zeros_like(img)
    elif spoil == "dim":  # the real image with the exposure cut to 1/20
        bad = (img // 20).astype(np.uint8)
    elif spoil == "white":
        bad = np.clip(img.astype(np.int32) + 240, 0, 255).astype(np.uint8)
    elif spoil == "blur":  # the real image, Gaussian-blurred (sigma 6 px): defocus
        pil = Image.fromarray(np.ascontiguousarray(img)).filter(ImageFilter.GaussianBlur(6))
        bad = np.asarray(pil)
    else:
        bad = img[:4, :4]
    frame = real_frames[3]
    spoiled = CameraImage("CAM_FRONT", nusc_front.timestamp_ns, np.ascontiguousarray(bad))
    cams = tuple(spoiled if c.name == "CAM_FRONT" else c for c in frame.cameras)
    gate = QualityGate()
    out = gate.check(_with(frame, cameras=cams))
    # drop_sensor: the frame goes on without CAM_FRONT.
    assert isinstance(out, Frame)
    assert "CAM_FRONT" not in out.camera_names
    assert len(out.cameras) == 5
    assert out.lidar is frame.lidar
    assert gate.counts[reason] == 1
    assert sum(gate.counts.values()) == 1
    # drop_frame: the whole frame is rejected with that reason.
    strict = QualityGate(QualityConfig(on_bad_sensor="drop_frame"))
    rej = strict.check(_with(frame, cameras=cams))
    assert isinstance(rej, QualityRejection)
    assert rej.reason is reason
    assert rej.issues[0].sensor == "CAM_FRONT"
    assert rej.seq == frame.seq


def test_blur_threshold_separates_real_from_blurred(real_frames: list[Frame]) -> None:
    gate = QualityGate()
    for frame in real_frames:
        for cam in frame.cameras:
            blurred = Image.fromarray(np.ascontiguousarray(cam.image)).filter(
                ImageFilter.GaussianBlur(6)
            )
            issue = gate.check_image(CameraImage(cam.name, 0, np.asarray(blurred)))
            assert issue is not None
            assert issue.reason is QualityReason.IMAGE_BLURRED


def test_blur_check_under_5_ms_on_1600x900(nusc_front: CameraImage) -> None:
    assert nusc_front.image.shape == (900, 1600, 3)
    gate = QualityGate()
    gate.check_image(nusc_front)
    # Best of 7 batches: the CPU is shared with other test processes; the best batch is
    # the cost of the check, the others measure the neighbours.
    batches = []
    for _ in range(7):
        t = time.perf_counter()
        for _ in range(10):
            gate.check_image(nusc_front)
        batches.append((time.perf_counter() - t) / 10 * 1e3)
    per_image_ms = min(batches)
    assert per_image_ms < 5.0, f"{per_image_ms:.2f} ms per 1600x900 image"


def test_lidar_nan_rows_are_dropped_and_counted(real_frames: list[Frame]) -> None:
    frame = real_frames[0]
    assert frame.lidar is not None
    pts = frame.lidar.points.copy()
    pts[::100, 0] = np.nan  # 1 % NaN rows: filtered, sweep kept
    pts[1::100, 2] = np.inf
    gate = QualityGate()
    out = gate.check(_with(frame, lidar=LidarSweep(0, pts, frame.lidar.fields)))
    assert isinstance(out, Frame)
    assert out.lidar is not None
    assert np.isfinite(out.lidar.points).all()
    dropped = len(range(0, len(pts), 100)) + len(range(1, len(pts), 100))
    assert out.lidar.num_points == len(pts) - dropped
    assert gate.nonfinite_points_dropped == dropped
    assert sum(gate.counts.values()) == 0


def test_lidar_mostly_nan_or_too_few_points_is_rejected(real_frames: list[Frame]) -> None:
    frame = real_frames[3]
    assert frame.lidar is not None
    pts = frame.lidar.points.copy()
    pts[: len(pts) // 2, :3] = np.nan
    gate = QualityGate()
    out = gate.check(_with(frame, lidar=LidarSweep(0, pts, frame.lidar.fields)))
    assert isinstance(out, Frame)
    assert out.lidar is None
    assert len(out.cameras) == 6
    assert gate.counts[QualityReason.LIDAR_NONFINITE] == 1
    few = LidarSweep(0, frame.lidar.points[:500].copy(), frame.lidar.fields)
    out = gate.check(_with(frame, lidar=few, cameras=()))
    assert isinstance(out, QualityRejection)
    assert out.reason is QualityReason.FRAME_EMPTY
    assert out.issues[0].reason is QualityReason.LIDAR_TOO_FEW_POINTS
    empty = LidarSweep(0, np.zeros((0, 4), np.float32), frame.lidar.fields)
    issue = gate.check_lidar(empty)[1]
    assert issue is not None
    assert issue.reason is QualityReason.LIDAR_TOO_FEW_POINTS
    flat = LidarSweep(0, np.zeros((2000, 2), np.float32), ("x", "y"))
    issue = gate.check_lidar(flat)[1]
    assert issue is not None
    assert issue.reason is QualityReason.LIDAR_INVALID
    assert gate.counts[QualityReason.FRAME_EMPTY] == 1
    assert gate.frames_rejected == 1


def test_pose_only_frames_pass() -> None:
    frame = Frame("v", "d", 0, 0, None, (), None)
    assert QualityGate().check(frame) is frame


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="on_bad_sensor"):
        QualityConfig(on_bad_sensor="nope")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="nonfinite_fraction_max"):
        QualityConfig(nonfinite_fraction_max=2.0)


def test_logged_once_per_reason_per_minute(
    real_frames: list[Frame], caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    gate = QualityGate(clock=clock)
    frame = real_frames[0]
    assert frame.lidar is not None
    black = CameraImage("image_2", 0, np.zeros((375, 1242, 3), np.uint8))
    few = LidarSweep(0, frame.lidar.points[:10].copy(), frame.lidar.fields)
    bad = _with(frame, cameras=(black,), lidar=few)
    with caplog.at_level(logging.WARNING, logger="edge_agent.quality"):
        for _ in range(10):
            gate.check(bad)
            clock.now += 5.0  # 50 s in all
        first = [r.getMessage() for r in caplog.records]
        clock.now += 15.0  # more than a minute after the first
        gate.check(bad)
    msgs = [r.getMessage() for r in caplog.records]
    assert len(first) == 2  # image_dark and lidar_too_few_points, once each
    assert any("image_dark" in m for m in first)
    assert any("lidar_too_few" in m for m in first)
    assert len(msgs) == 4
    assert all("(9 more suppressed)" in m for m in msgs[2:])
    assert gate.counts[QualityReason.IMAGE_DARK] == 11
    assert gate.counts[QualityReason.LIDAR_TOO_FEW_POINTS] == 11
    assert gate.counts[QualityReason.FRAME_EMPTY] == 11


def test_rate_limited_logger_keys_are_independent() -> None:
    clock = FakeClock()
    records: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger = logging.getLogger("test.ratelimit")
    logger.addHandler(Capture())
    logger.propagate = False
    limited = RateLimitedLogger(logger, interval_s=60, clock=clock)
    assert limited.log("a", logging.ERROR, "a %d", 1)
    assert limited.log("b", logging.ERROR, "b %d", 1)
    assert not limited.log("a", logging.ERROR, "a %d", 2)
    clock.now += 60
    assert limited.log("a", logging.ERROR, "a %d", 3)
    assert records == ["a 1", "b 1", "a 3 (1 more suppressed)"]


def test_random_bytes_and_zero_buffers_are_not_lidar_sweeps(real_frames: list[Frame]) -> None:
    """A .bin of random bytes decodes to an (N, 4) float32 array with under 1 % NaN rows;
    the plausibility checks reject it, and zero-filled or bad-intensity sweeps, by reason,
    while every real sweep (KITTI, nuScenes) passes them."""
    gate = QualityGate()
    for frame in real_frames:
        assert frame.lidar is not None
        kept, issue = gate.check_lidar(frame.lidar)
        assert issue is None
        assert kept is frame.lidar
    fields = ("x", "y", "z", "reflectance")
    noise = np.frombuffer(np.random.default_rng(5).bytes(16 * 120_000), "<f4").reshape(-1, 4)
    random_sweep = LidarSweep(0, noise.copy(), fields, path="/d/velodyne/000007.bin")
    kept, issue = gate.check_lidar(random_sweep)
    assert kept is None
    assert issue is not None
    assert issue.reason is QualityReason.LIDAR_OUT_OF_RANGE
    assert issue.path == "/d/velodyne/000007.bin"
    zeros = LidarSweep(0, np.zeros((120_000, 4), np.float32), fields)
    assert gate.check_lidar(zeros)[1].reason is QualityReason.LIDAR_AT_ORIGIN  # type: ignore[union-attr]
    real = real_frames[0].lidar
    assert real is not None
    pts = real.points.copy()
    pts[::2, 3] = -5.0  # half the reflectances negative
    bad_int = LidarSweep(0, pts, real.fields)
    assert gate.check_lidar(bad_int)[1].reason is QualityReason.LIDAR_BAD_INTENSITY  # type: ignore[union-attr]
    frame = _with(real_frames[0], lidar=random_sweep)
    out, issues = gate.assess(frame)
    assert isinstance(out, Frame)  # the camera survives, scored on what it has
    assert out.lidar is None
    assert [(i.reason, i.path) for i in issues] == [
        (QualityReason.LIDAR_OUT_OF_RANGE, "/d/velodyne/000007.bin")
    ]
    assert gate.counts[QualityReason.LIDAR_OUT_OF_RANGE] == 1  # counted by check / assess
    assert gate.counts[QualityReason.LIDAR_AT_ORIGIN] == 0  # check_lidar alone counts nothing


def test_plausibility_thresholds_are_validated() -> None:
    with pytest.raises(ValueError, match="max_range_m"):
        QualityConfig(max_range_m=0.0)
    with pytest.raises(ValueError, match="origin_fraction_max"):
        QualityConfig(origin_fraction_max=1.5)
    with pytest.raises(ValueError, match="intensity_min"):
        QualityConfig(intensity_min=10.0, intensity_max=1.0)


def test_suppressed_lines_are_debug_and_flushed_as_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    limited = RateLimitedLogger(logging.getLogger("t.flush"), 60.0, clock)
    with caplog.at_level(logging.DEBUG, logger="t.flush"):
        for i in range(4):
            limited.log("k", logging.WARNING, "bad file %s", f"/f{i}")
        assert limited.flush() == {"k": 3}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    debugs = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert warnings == ["bad file /f0", "k: 3 more not logged since the last line"]
    assert debugs == ["bad file /f1", "bad file /f2", "bad file /f3"]
    assert limited.flush() == {}
