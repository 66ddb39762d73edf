"""The messages that flow from a source into the pipeline.

A source yields ``Frame | SourceError`` (see ``edge_agent.sources``): a ``Frame`` is one
synchronised snapshot of the vehicle (ego pose, camera images, one LiDAR sweep); a
``SourceError`` is a piece of bad input turned into a value, so that one corrupt file is
counted and routed to the dead-letter path instead of stopping the loop.

All messages are frozen, slotted dataclasses. Arrays inside them are made read-only when
the message is built, so a stage cannot change a frame another stage still holds.
Dataclasses that hold arrays compare by identity (``eq=False``): element-wise comparison
of multi-megabyte arrays is never what a caller wants from ``==``.
"""

from __future__ import annotations

import enum
import hashlib
import struct
from dataclasses import dataclass
from typing import Literal, TypeVar

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "CameraImage",
    "EgoPose",
    "Frame",
    "ImageEncoding",
    "LidarSweep",
    "SourceError",
    "SourceErrorReason",
    "content_digest",
]

ImageEncoding = Literal["png", "jpeg"]

XYZ = tuple[float, float, float]
WXYZ = tuple[float, float, float, float]


_T = TypeVar("_T", bound=np.generic)


def _read_only(array: NDArray[_T]) -> NDArray[_T]:
    if array.flags.writeable:
        array.flags.writeable = False
    return array


@dataclass(frozen=True, slots=True)
class EgoPose:
    """Pose of the vehicle at a frame's timestamp.

    ``position_m`` is in a local metric frame (x, y, z in metres): the dataset's own metric
    map frame where it has one (nuScenes ``global``, Argoverse ``city``), otherwise east /
    north / up relative to the first fix of the drive (KITTI OXTS, comma2k19, NavSatFix).
    ``orientation_wxyz`` is the unit quaternion rotating vehicle coordinates into that
    frame. ``lat_lon_alt`` (degrees, degrees, metres above the WGS84 ellipsoid) is set when
    the source has a global fix.
    """

    position_m: XYZ
    orientation_wxyz: WXYZ | None = None
    lat_lon_alt: XYZ | None = None


@dataclass(frozen=True, slots=True, eq=False)
class CameraImage:
    """One decoded camera image.

    ``image`` is decoded eagerly by the source (``(H, W, 3)`` uint8, RGB), so that a
    truncated or corrupt file is caught at the reader and becomes a ``SourceError``, and
    the quality gate and the model runner share one decode. ``encoded`` keeps the bytes as
    they came from the sensor or the file, with their ``encoding``, so the encoder can ship
    them without re-encoding; both are ``None`` for sources that deliver raw pixels (a ROS
    ``sensor_msgs/Image``), and the encoder compresses those itself. ``path`` is the file
    it was read from, where there is one, so that reports can name it.
    """

    name: str
    timestamp_ns: int
    image: NDArray[np.uint8]
    encoded: bytes | None = None
    encoding: ImageEncoding | None = None
    path: str | None = None
    source: str | None = None
    """The sensor's own name where the camera name cannot be it (an MCAP camera's ROS topic)."""

    def __post_init__(self) -> None:
        _read_only(self.image)

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


@dataclass(frozen=True, slots=True, eq=False)
class LidarSweep:
    """One LiDAR sweep: ``points`` is ``(N, C)`` float32, column ``i`` named ``fields[i]``.

    The first three fields are always ``x, y, z`` in metres in the sensor (or ego) frame the
    dataset stores; the rest are layout specific (``intensity``, ``ring``, ...). ``path`` is
    the file it was read from, where there is one, so that reports can name it.
    """

    timestamp_ns: int
    points: NDArray[np.float32]
    fields: tuple[str, ...]
    path: str | None = None

    def __post_init__(self) -> None:
        _read_only(self.points)

    @property
    def num_points(self) -> int:
        return int(self.points.shape[0])


@dataclass(frozen=True, slots=True, eq=False)
class Frame:
    """One synchronised snapshot of a vehicle's sensors.

    ``(vehicle_id, drive_id, seq)`` is the frame's identity end to end (ingest
    de-duplicates on it); ``seq`` counts from 0 within a drive and never repeats.
    ``timestamp_ns`` is nanoseconds since the Unix epoch (UTC) where the recording has
    absolute time, else the recording's own clock (documented per layout in
    docs/sources.md). A frame may carry no cameras, no LiDAR or no pose; which sensors a
    layout provides is documented per source.

    ``problems`` lists the sensor files the source could not read while it still built the
    frame from the others (a sweep whose image is missing is scored on its sweep); each
    names its file and reason, and the pipeline reports them. A frame with problems and no
    sensor left is dropped with the first problem as its reason.
    """

    vehicle_id: str
    drive_id: str
    seq: int
    timestamp_ns: int
    pose: EgoPose | None
    cameras: tuple[CameraImage, ...]
    lidar: LidarSweep | None
    problems: tuple[SourceError, ...] = ()

    def camera(self, name: str) -> CameraImage | None:
        """The camera called ``name``, or ``None`` when this frame has none by that name."""
        for cam in self.cameras:
            if cam.name == name:
                return cam
        return None

    @property
    def camera_names(self) -> tuple[str, ...]:
        return tuple(cam.name for cam in self.cameras)


class SourceErrorReason(enum.StrEnum):
    """Why a piece of input could not become (part of) a frame. A fixed set: metrics
    label on it."""

    MISSING_FILE = "missing_file"
    """A file the layout promises (index, timestamp line) is not there."""
    TRUNCATED = "truncated"
    """The file ends early (truncated image, short read)."""
    BAD_SIZE = "bad_size"
    """The byte size does not fit the record layout (e.g. not a multiple of 16)."""
    DECODE_FAILED = "decode_failed"
    """The bytes are not a valid file of the expected format."""
    BAD_CONTENT = "bad_content"
    """Decoded, but the content is unusable (wrong shape, unknown pixel encoding)."""
    BAD_METADATA = "bad_metadata"
    """Timestamps, poses or index files are malformed."""


@dataclass(frozen=True, slots=True)
class SourceError:
    """Bad input turned into a value: a source yields it in place of the frame it could not
    build, then carries on with the next one.

    ``message`` is meant for a human reading the dead-letter log: it names the file and
    says what to do about it.
    """

    drive_id: str
    seq: int | None
    timestamp_ns: int | None
    sensor: str
    path: str
    reason: SourceErrorReason
    message: str


def content_digest(frame: Frame) -> str:
    """A digest of what the sensors saw (timestamps, image bytes, sweep), not of any decision:
    two frames with one key and different digests are two different frames (the spool refuses
    the second as a key conflict)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(struct.pack("<qq", frame.seq, frame.timestamp_ns))
    for cam in frame.cameras:
        h.update(cam.name.encode("utf-8"))
        h.update(struct.pack("<q", cam.timestamp_ns))
        h.update(cam.encoded if cam.encoded is not None else np.ascontiguousarray(cam.image).data)
    if frame.lidar is not None:
        h.update(struct.pack("<q", frame.lidar.timestamp_ns))
        h.update(np.ascontiguousarray(frame.lidar.points).data)
    return h.hexdigest()
