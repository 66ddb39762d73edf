"""Encoder: a selected :class:`Frame` and its decision into a versioned wire envelope.

Camera images travel as the bytes the sensor or the file gave (PNG or JPEG, never re-encoded);
raw pixels (a ROS ``sensor_msgs/Image``) are JPEG-compressed here. The LiDAR sweep is
quantised and compressed by :mod:`schemas.pointcloud`. The selection record carries the score,
its components, the threshold and a hash of the strategy's parameters, so ingest and the
replay report can say why a frame was chosen.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from edge_agent import __version__
from edge_agent.frame import Frame
from schemas.messages import (
    CameraPayload,
    EgoPose,
    FrameEnvelope,
    GeoPoint,
    ModelInfo,
    SelectionRecord,
)
from schemas.pointcloud import lidar_payload
from schemas.wire import encode
from selector.decision import Decision

JPEG_QUALITY = 90


def params_sha256(params: Mapping[str, Any]) -> str:
    """Hex sha256 of a strategy's parameters in canonical JSON (sorted keys)."""
    blob = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _jpeg(image: NDArray[np.uint8]) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def estimate_nbytes(frame: Frame) -> int:
    """A cheap estimate of the encoded size, for the bytes-per-hour budget before encoding.

    Images count their encoded size (or ~1/8 of raw pixels for JPEG); a sweep ~4.5x smaller
    than its float32 bytes (the point-cloud codec's ratio on real sweeps).
    """
    total = 0
    for cam in frame.cameras:
        total += len(cam.encoded) if cam.encoded is not None else cam.image.size // 8
    if frame.lidar is not None:
        total += frame.lidar.points.nbytes * 2 // 9
    return total + 512


@dataclass(frozen=True, slots=True)
class StrategyInfo:
    name: str
    params_sha256: str


def to_envelope(
    frame: Frame,
    decision: Decision,
    *,
    strategy: StrategyInfo,
    models: Sequence[ModelInfo],
) -> FrameEnvelope:
    """Build the wire envelope of a selected frame (validated when encoded)."""
    cameras = []
    for cam in frame.cameras:
        if cam.encoded is not None and cam.encoding is not None:
            data, encoding = cam.encoded, cam.encoding
        else:
            data, encoding = _jpeg(cam.image), "jpeg"
        cameras.append(
            CameraPayload(
                name=cam.name,
                encoding=encoding,
                width=cam.width,
                height=cam.height,
                data=data,
                timestamp_ns=cam.timestamp_ns,
            )
        )
    lidar = None
    if frame.lidar is not None:
        lidar = lidar_payload(frame.lidar.points, fields=frame.lidar.fields)
    if frame.pose is not None:
        geo = GeoPoint(*frame.pose.lat_lon_alt) if frame.pose.lat_lon_alt is not None else None
        orientation = frame.pose.orientation_wxyz or (1.0, 0.0, 0.0, 0.0)
        pose = EgoPose(frame.pose.position_m, orientation, geo)
    else:  # the envelope always carries a pose; a drive without one sits at the origin
        pose = EgoPose((0.0, 0.0, 0.0))
    selection = SelectionRecord(
        score=decision.score,
        threshold=decision.threshold,
        strategy=strategy.name,
        reason=str(decision.reason),
        params_sha256=strategy.params_sha256,
        components=dict(decision.components),
    )
    return FrameEnvelope(
        vehicle_id=frame.vehicle_id,
        drive_id=frame.drive_id,
        frame_seq=frame.seq,
        timestamp_ns=frame.timestamp_ns,
        pose=pose,
        cameras=tuple(cameras),
        lidar=lidar,
        selection=selection,
        models=tuple(models),
        agent_version=__version__,
    )


def encode_frame(
    frame: Frame,
    decision: Decision,
    *,
    strategy: StrategyInfo,
    models: Sequence[ModelInfo],
) -> bytes:
    """The envelope of a selected frame, Avro-encoded behind the versioned header."""
    return encode(to_envelope(frame, decision, strategy=strategy, models=models))
