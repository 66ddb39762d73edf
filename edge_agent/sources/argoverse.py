"""Argoverse 2 sensor-dataset logs.

Layout of one log (``<log_id>/``)::

    sensors/lidar/<timestamp_ns>.feather          x, y, z (float16, m, ego frame),
                                                  intensity (uint8), laser_number (uint8),
                                                  offset_ns (int32, from sweep start)
    sensors/cameras/<camera>/<timestamp_ns>.jpg   optional, seven ring + two stereo cameras
    city_SE3_egovehicle.feather                   timestamp_ns, qw qx qy qz, tx_m ty_m tz_m
    calibration/                                  not needed to build frames

One frame per LiDAR sweep, timestamped by its file name (ns since the Unix epoch). Cameras
are matched by nearest timestamp within the sync tolerance. The pose is the city-frame
ego pose interpolated at the sweep time (positions linearly, orientations by normalised
quaternion interpolation; the log has ~170 poses per second).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
from numpy.typing import NDArray

from edge_agent.errors import SourceOpenError
from edge_agent.frame import CameraImage, Frame, LidarSweep, SourceError, SourceErrorReason
from edge_agent.sources.base import BadInputError, SourceBase, SourceOptions, read_image_file
from edge_agent.sources.sync import PoseTrack, match_nearest, poses_at

__all__ = ["AV2_LIDAR_FIELDS", "Av2Source", "read_av2_poses", "read_av2_sweep"]

log = logging.getLogger(__name__)

AV2_LIDAR_FIELDS = ("x", "y", "z", "intensity", "laser_number", "offset_ns")
_POSE_COLUMNS = ("timestamp_ns", "qw", "qx", "qy", "qz", "tx_m", "ty_m", "tz_m")


def _read_table(path: Path, columns: tuple[str, ...], sensor: str) -> pa.Table:
    try:
        table = feather.read_table(path)
    except FileNotFoundError as exc:
        raise BadInputError(
            SourceErrorReason.MISSING_FILE, path, "feather file is missing; re-copy the log", sensor
        ) from exc
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise BadInputError(
            SourceErrorReason.DECODE_FAILED,
            path,
            f"not a readable Arrow/Feather file ({type(exc).__name__}: {exc}); the file is "
            "corrupt or truncated: re-copy it from the log or drop this frame",
            sensor,
        ) from exc
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise BadInputError(
            SourceErrorReason.BAD_CONTENT,
            path,
            f"columns {missing} missing (has {table.column_names}); not an Argoverse 2 file",
            sensor,
        )
    return table


def read_av2_sweep(path: Path) -> NDArray[np.float32]:
    """One AV2 LiDAR feather file -> ``(N, 6)`` float32 in ``AV2_LIDAR_FIELDS`` order."""
    table = _read_table(path, AV2_LIDAR_FIELDS, "lidar")
    out = np.empty((table.num_rows, len(AV2_LIDAR_FIELDS)), dtype=np.float32)
    for i, name in enumerate(AV2_LIDAR_FIELDS):
        out[:, i] = table.column(name).to_numpy(zero_copy_only=False)
    return out


def read_av2_poses(path: Path) -> PoseTrack:
    """``city_SE3_egovehicle.feather`` -> a time-sorted ``PoseTrack`` in city metres."""
    table = _read_table(path, _POSE_COLUMNS, "pose")
    cols = {c: table.column(c).to_numpy(zero_copy_only=False) for c in _POSE_COLUMNS}
    ts = cols["timestamp_ns"].astype(np.int64)
    order = np.argsort(ts, kind="stable")
    quat = np.stack([cols[c] for c in ("qw", "qx", "qy", "qz")], axis=1).astype(np.float64)
    pos = np.stack([cols[c] for c in ("tx_m", "ty_m", "tz_m")], axis=1).astype(np.float64)
    return PoseTrack(ts[order], pos[order], quat[order])


def _stamped_files(folder: Path, suffix: str) -> tuple[NDArray[np.int64], list[Path]]:
    pairs: list[tuple[int, Path]] = []
    for p in folder.glob(f"*{suffix}"):
        stem = p.name[: -len(suffix)]
        if stem.isdigit():
            pairs.append((int(stem), p))
        else:
            log.warning("%s: file name is not a ns timestamp, ignored", p)
    pairs.sort()
    return np.array([t for t, _ in pairs], dtype=np.int64), [p for _, p in pairs]


class Av2Source(SourceBase):
    """One Argoverse 2 sensor log folder. See the module docstring."""

    def __init__(self, path: str | Path, options: SourceOptions | None = None) -> None:
        root = Path(path)
        super().__init__(root, options or SourceOptions())
        lidar_dir = root / "sensors" / "lidar"
        if not lidar_dir.is_dir():
            raise SourceOpenError(str(root), "no sensors/lidar/; is this an Argoverse 2 log?")
        self._sweep_ts, self._sweep_paths = _stamped_files(lidar_dir, ".feather")
        cam_root = root / "sensors" / "cameras"
        self._cameras: dict[str, tuple[NDArray[np.int64], list[Path]]] = {}
        if cam_root.is_dir():
            for cam_dir in sorted(p for p in cam_root.iterdir() if p.is_dir()):
                if self.options.wants_camera(cam_dir.name):
                    self._cameras[cam_dir.name] = _stamped_files(cam_dir, ".jpg")
        self._poses: PoseTrack | None = None
        pose_path = root / "city_SE3_egovehicle.feather"
        try:
            self._poses = read_av2_poses(pose_path)
        except BadInputError as defect:
            log.warning("%s; frames of this log have no pose", defect)

    def __len__(self) -> int:
        return len(self._sweep_paths)

    @property
    def camera_names(self) -> tuple[str, ...]:
        return tuple(self._cameras)

    def frames(self) -> Iterator[Frame | SourceError]:
        tol = self.options.sync_tolerance_ns
        matches = {
            name: match_nearest(self._sweep_ts, ts, tol) for name, (ts, _) in self._cameras.items()
        }
        poses = poses_at(self._poses, self._sweep_ts, tol)
        for seq, (ts, path) in enumerate(
            zip(self._sweep_ts.tolist(), self._sweep_paths, strict=True)
        ):
            if self._closed:
                return
            try:
                lidar = LidarSweep(ts, read_av2_sweep(path), AV2_LIDAR_FIELDS, path=str(path))
                cams: list[CameraImage] = []
                for name, (cam_ts, cam_paths) in self._cameras.items():
                    j = int(matches[name][seq])
                    if j >= 0:
                        cams.append(read_image_file(cam_paths[j], name, int(cam_ts[j])))
            except BadInputError as defect:
                yield self.error(defect, seq, ts)
                continue
            yield self.make_frame(seq, ts, poses[seq], tuple(cams), lidar)
