"""Frame messages: immutable, arrays read-only, error values carry what a human needs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edge_agent.frame import (
    CameraImage,
    EgoPose,
    Frame,
    LidarSweep,
    SourceError,
    SourceErrorReason,
)


def test_frame_is_frozen_and_arrays_read_only() -> None:
    img = np.zeros((4, 6, 3), np.uint8)
    pts = np.zeros((10, 4), np.float32)
    cam = CameraImage("front", 5, img)
    sweep = LidarSweep(5, pts, ("x", "y", "z", "i"))
    frame = Frame("v", "d", 0, 5, EgoPose((1.0, 2.0, 3.0)), (cam,), sweep)
    with pytest.raises(ValueError, match="read-only"):
        img[0, 0, 0] = 1
    with pytest.raises(ValueError, match="read-only"):
        pts[0, 0] = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        frame.seq = 1  # type: ignore[misc]
    assert frame.camera("front") is cam
    assert frame.camera("rear") is None
    assert frame.camera_names == ("front",)
    assert (cam.height, cam.width, sweep.num_points) == (4, 6, 10)
    assert not hasattr(frame, "__dict__")  # slotted


def test_source_error_value() -> None:
    err = SourceError("d", 3, 10, "lidar", "/x.bin", SourceErrorReason.BAD_SIZE, "/x.bin: bad")
    assert err == SourceError(
        "d", 3, 10, "lidar", "/x.bin", SourceErrorReason.BAD_SIZE, "/x.bin: bad"
    )
    assert err.reason == "bad_size"
    assert EgoPose((0.0, 0.0, 0.0)) == EgoPose((0.0, 0.0, 0.0))
