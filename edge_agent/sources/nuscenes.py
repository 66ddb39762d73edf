"""nuScenes via its per-sample info JSON (the mmdetection3d ``*.info.json`` layout).

One file lists samples (``data_list``); each sample names its ``LIDAR_TOP`` sweep
(``lidar_points.lidar_path``, ``N x num_pts_feats`` float32: x, y, z, intensity, ring) and
six camera JPEGs (``images.<CAM>.img_path``), each with its own timestamp in seconds.
A sample is a keyframe the dataset has already synchronised: the cameras listed for it are
the frame's cameras (their own timestamps are kept on each ``CameraImage``), and a camera
further than the sync tolerance from the sweep is left out of the frame.

Frame time is the sample ``timestamp`` (the LiDAR time), in ns since the Unix epoch. The
pose is ``ego2global`` (4 x 4, metres, nuScenes' global map frame), as position +
quaternion. Files are looked up next to the JSON first, then under
``samples/<SENSOR>/`` (the nuScenes directory layout).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.errors import SourceOpenError
from edge_agent.frame import (
    CameraImage,
    EgoPose,
    Frame,
    LidarSweep,
    SourceError,
    SourceErrorReason,
)
from edge_agent.sources.base import (
    BadInputError,
    SourceBase,
    SourceOptions,
    read_float32_records,
    read_image_file,
)
from edge_agent.sources.geo import matrix_to_quat

__all__ = ["NUSCENES_LIDAR_FIELDS", "NuScenesSource"]

NUSCENES_LIDAR_FIELDS = ("x", "y", "z", "intensity", "ring")


def _seconds_to_ns(value: float) -> int:
    # nuScenes timestamps are integer microseconds; the info file stores them as seconds.
    return round(float(value) * 1_000_000) * 1000


def _pose_from_matrix(matrix: Any) -> EgoPose:
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (4, 4) or not np.all(np.isfinite(m)):
        raise ValueError(f"ego2global must be a finite 4x4 matrix, got shape {m.shape}")
    q = matrix_to_quat(m[:3, :3])
    return EgoPose(
        position_m=(float(m[0, 3]), float(m[1, 3]), float(m[2, 3])),
        orientation_wxyz=(float(q[0]), float(q[1]), float(q[2]), float(q[3])),
    )


class NuScenesSource(SourceBase):
    """Samples of a nuScenes ``*.info.json`` (path: the JSON file or its folder)."""

    def __init__(self, path: str | Path, options: SourceOptions | None = None) -> None:
        root = Path(path)
        if root.is_dir():
            found = sorted(root.glob("*.info.json")) or sorted(root.glob("*_infos_*.json"))
            if len(found) != 1:
                raise SourceOpenError(
                    str(root),
                    f"expected exactly one *.info.json, found {len(found)}; pass the file",
                )
            root = found[0]
        super().__init__(root, options or SourceOptions())
        try:
            doc = json.loads(root.read_text(encoding="utf-8"))
            samples = doc["data_list"]
            if not isinstance(samples, list):
                raise TypeError("data_list is not a list")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SourceOpenError(
                str(root), f"not a readable nuScenes info file ({type(exc).__name__}: {exc})"
            ) from exc
        self.folder = root.parent
        self.samples: list[Mapping[str, Any]] = [s for s in samples if isinstance(s, dict)]
        self.samples.sort(key=lambda s: float(s.get("timestamp", 0.0)))

    def __len__(self) -> int:
        return len(self.samples)

    def _resolve(self, name: str, sensor: str) -> Path:
        direct = self.folder / name
        if direct.exists():
            return direct
        nested = self.folder / "samples" / sensor / Path(name).name
        return nested if nested.exists() else direct

    def _build(self, seq: int, sample: Mapping[str, Any]) -> Frame:
        info = self.root
        try:
            ts = _seconds_to_ns(sample["timestamp"])
            pose = _pose_from_matrix(sample["ego2global"]) if "ego2global" in sample else None
            lidar_info = sample.get("lidar_points")
            images = sample.get("images", {})
        except (KeyError, TypeError, ValueError) as exc:
            raise BadInputError(
                SourceErrorReason.BAD_METADATA,
                info,
                f"sample {seq}: malformed entry ({type(exc).__name__}: {exc}); "
                "regenerate the info file",
            ) from exc
        lidar = None
        if isinstance(lidar_info, dict) and lidar_info.get("lidar_path"):
            columns = int(lidar_info.get("num_pts_feats", 5))
            path = self._resolve(str(lidar_info["lidar_path"]), "LIDAR_TOP")
            points = read_float32_records(path, columns, "LIDAR_TOP")
            fields = NUSCENES_LIDAR_FIELDS[:columns] + tuple(
                f"f{i}" for i in range(len(NUSCENES_LIDAR_FIELDS), columns)
            )
            lidar = LidarSweep(ts, points, fields, path=str(path))
        cams: list[CameraImage] = []
        for name in images if isinstance(images, dict) else ():
            cam = images[name]
            if not self.options.wants_camera(name) or not cam.get("img_path"):
                continue
            cam_ts = _seconds_to_ns(cam.get("timestamp", sample["timestamp"]))
            if abs(cam_ts - ts) > self.options.sync_tolerance_ns:
                continue
            cams.append(read_image_file(self._resolve(str(cam["img_path"]), name), name, cam_ts))
        return self.make_frame(seq, ts, pose, tuple(cams), lidar)

    def frames(self) -> Iterator[Frame | SourceError]:
        for seq, sample in enumerate(self.samples):
            if self._closed:
                return
            try:
                yield self._build(seq, sample)
            except BadInputError as defect:
                ts = sample.get("timestamp")
                yield self.error(
                    defect, seq, _seconds_to_ns(ts) if isinstance(ts, int | float) else None
                )
