"""Source interfaces and the helpers every reader shares.

A source has one main method, ``frames()``, an iterator of ``Frame | SourceError``, and
``close()``. Recorded-drive readers (KITTI, nuScenes, Argoverse 2, comma2k19, MCAP) end
when the recording ends; a ``LiveSource`` (a vehicle's sensor bridge) runs until
``stop()`` is called or its idle timeout expires.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from edge_agent.errors import BadInputError
from edge_agent.frame import (
    CameraImage,
    EgoPose,
    Frame,
    ImageEncoding,
    LidarSweep,
    SourceError,
    SourceErrorReason,
)

__all__ = [
    "DEFAULT_SYNC_TOLERANCE_NS",
    "BadInputError",
    "FrameSource",
    "LiveSource",
    "SourceBase",
    "SourceOptions",
    "decode_image",
    "read_float32_records",
    "read_image_file",
]

DEFAULT_SYNC_TOLERANCE_NS = 50_000_000
"""Half a LiDAR period at 10 Hz: a camera further than this from the sweep is not part of
the frame."""


@runtime_checkable
class FrameSource(Protocol):
    """Anything the pipeline can pull frames from."""

    def frames(self) -> Iterator[Frame | SourceError]:
        """Frames in time order; bad input is yielded as ``SourceError`` and skipped."""
        ...

    def close(self) -> None:
        """Release files and handles. Idempotent."""
        ...


@runtime_checkable
class LiveSource(FrameSource, Protocol):
    """A source fed by the vehicle while it drives (documented in docs/sources.md).

    ``frames()`` blocks for at most its poll interval at a time while waiting for input, so
    that ``stop()`` (from a signal handler or another thread) ends the iteration within one
    poll interval. Each frame is acknowledged to the producer (file moved or deleted) only
    after the consumer has asked for the next one, so a crash never loses a frame that was
    handed out but not yet processed; it may hand it out again (at-least-once).
    """

    def stop(self) -> None:
        """Ask ``frames()`` to return after the frame in hand. Thread-safe, idempotent."""
        ...


@dataclass(frozen=True, slots=True)
class SourceOptions:
    """Options every source takes.

    ``vehicle_id`` and ``drive_id`` stamp every frame (``drive_id=None``: the recording's
    folder or file name). ``cameras=None`` loads every camera the layout has; a tuple
    restricts to those names (layout-specific names: ``image_02``, ``CAM_FRONT``,
    ``ring_front_center``, a ROS topic). ``sync_tolerance_ns``: how far a camera (or pose)
    may be from the reference sweep and still be part of its frame.
    """

    vehicle_id: str = "replay"
    drive_id: str | None = None
    cameras: tuple[str, ...] | None = None
    sync_tolerance_ns: int = DEFAULT_SYNC_TOLERANCE_NS

    def __post_init__(self) -> None:
        if self.sync_tolerance_ns < 0:
            raise ValueError(f"sync_tolerance_ns must be >= 0, got {self.sync_tolerance_ns}")
        if not self.vehicle_id:
            raise ValueError("vehicle_id must not be empty")

    def wants_camera(self, name: str) -> bool:
        return self.cameras is None or name in self.cameras


class SourceBase:
    """Shared plumbing: options, the drive id, context manager, error values."""

    def __init__(self, root: Path, options: SourceOptions) -> None:
        self.root = root
        self.options = options
        self.drive_id = options.drive_id or _default_drive_id(root)
        self._closed = False

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def make_frame(
        self,
        seq: int,
        timestamp_ns: int,
        pose: EgoPose | None,
        cameras: tuple[CameraImage, ...],
        lidar: LidarSweep | None,
        problems: tuple[SourceError, ...] = (),
    ) -> Frame:
        return Frame(
            vehicle_id=self.options.vehicle_id,
            drive_id=self.drive_id,
            seq=seq,
            timestamp_ns=timestamp_ns,
            pose=pose,
            cameras=cameras,
            lidar=lidar,
            problems=problems,
        )

    def error(
        self, defect: BadInputError, seq: int | None, timestamp_ns: int | None
    ) -> SourceError:
        return SourceError(
            drive_id=self.drive_id,
            seq=seq,
            timestamp_ns=timestamp_ns,
            sensor=defect.sensor,
            path=defect.path,
            reason=defect.reason,
            message=f"{defect.path}: {defect.message}",
        )


def _default_drive_id(root: Path) -> str:
    name = root.name
    for suffix in (".info.json", ".mcap", ".json"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name or "drive"


def decode_image(
    data: bytes, path: str | Path, sensor: str
) -> tuple[NDArray[np.uint8], ImageEncoding]:
    """Decode PNG or JPEG bytes to ``(H, W, 3)`` uint8 RGB; raise ``BadInputError`` if bad."""
    if not data:
        raise BadInputError(
            SourceErrorReason.TRUNCATED,
            path,
            "image file is empty (0 bytes); the recording was cut off: re-copy the file "
            "or drop this frame from the drive",
            sensor,
        )
    try:
        # No warnings.catch_warnings() here: it swaps process-wide state and is not
        # thread-safe. Where warnings are errors (tests), PIL's land in the except below.
        with Image.open(io.BytesIO(data)) as img:
            fmt = img.format
            img.load()
            rgb = img.convert("RGB") if img.mode != "RGB" else img
            array = np.asarray(rgb, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, Warning, Image.DecompressionBombError) as exc:
        text = str(exc)
        truncated = "truncated" in text or "broken data stream" in text
        reason = SourceErrorReason.TRUNCATED if truncated else SourceErrorReason.DECODE_FAILED
        what = "is truncated" if truncated else "is not a readable PNG/JPEG image"
        raise BadInputError(
            reason,
            path,
            f"image {what} ({type(exc).__name__}: {text}); re-copy it from the vehicle "
            "disk or drop this frame from the drive",
            sensor,
        ) from exc
    encoding: ImageEncoding
    if fmt == "PNG":
        encoding = "png"
    elif fmt in ("JPEG", "MPO"):
        encoding = "jpeg"
    else:
        raise BadInputError(
            SourceErrorReason.DECODE_FAILED,
            path,
            f"image format {fmt!r} is not supported (PNG or JPEG); convert the file",
            sensor,
        )
    return array, encoding


def read_image_file(path: Path, name: str, timestamp_ns: int) -> CameraImage:
    """Read and decode one image file into a ``CameraImage``; ``BadInputError`` if bad."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise BadInputError(
            SourceErrorReason.MISSING_FILE,
            path,
            "image file listed by the recording is missing; check the copy is complete",
            name,
        ) from exc
    except OSError as exc:
        raise BadInputError(
            SourceErrorReason.DECODE_FAILED, path, f"cannot read image file: {exc}", name
        ) from exc
    image, encoding = decode_image(data, path, name)
    return CameraImage(
        name=name,
        timestamp_ns=timestamp_ns,
        image=image,
        encoded=data,
        encoding=encoding,
        path=str(path),
    )


def read_float32_records(path: Path, columns: int, sensor: str) -> NDArray[np.float32]:
    """Read a flat little-endian float32 point file as ``(N, columns)``.

    KITTI ``velodyne/*.bin`` (4 columns) and nuScenes ``*.pcd.bin`` (5 columns) use it.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise BadInputError(
            SourceErrorReason.MISSING_FILE,
            path,
            "point file listed by the recording is missing; check the copy is complete",
            sensor,
        ) from exc
    except OSError as exc:
        raise BadInputError(
            SourceErrorReason.DECODE_FAILED, path, f"cannot read point file: {exc}", sensor
        ) from exc
    record = 4 * columns
    if len(data) % record:
        raise BadInputError(
            SourceErrorReason.BAD_SIZE,
            path,
            f"size {len(data)} bytes is not a multiple of {record} "
            f"({columns} float32 per point): the file is truncated or not a "
            f"{columns}-column sweep; re-copy it or drop this frame",
            sensor,
        )
    if not data:
        raise BadInputError(
            SourceErrorReason.TRUNCATED,
            path,
            "point file is empty (0 bytes); re-copy it or drop this frame",
            sensor,
        )
    points = np.frombuffer(data, dtype="<f4").reshape(-1, columns)
    return points.astype(np.float32, copy=False)
