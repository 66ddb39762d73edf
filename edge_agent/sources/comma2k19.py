"""comma2k19 segments: pose-only frames (the video is not part of this reader).

Layout of one segment (``<route>/<segment>/``)::

    global_pose/frame_times          (N,) float64, s, the device's monotonic clock
    global_pose/frame_gps_times      (N, 2) float64, GPS week, GPS time of week (s)
    global_pose/frame_positions      (N, 3) float64, ECEF metres
    global_pose/frame_orientations   (N, 4) float64, quaternion wxyz, device -> ECEF
    global_pose/frame_velocities     (N, 3) float64, ECEF m/s

Each file is a NumPy array written without the ``.npy`` suffix. One frame per camera frame
(20 Hz), with no camera image and no LiDAR: the frames carry the real trajectory and clock.

Time: GPS week + time of week converted to Unix ns (GPS epoch 1980-01-06, minus the 18 leap
seconds in force since 2017); without ``frame_gps_times``, the monotonic ``frame_times``.
Pose: position in east / north / up metres relative to the segment's first frame,
``lat_lon_alt`` from the ECEF position (WGS84), orientation rotated into that ENU frame and
converted from comma's device frame (x forward, y right, z down) to x forward, y left,
z up like the other layouts.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from edge_agent.errors import SourceOpenError
from edge_agent.frame import EgoPose, Frame, SourceError
from edge_agent.sources.base import SourceBase, SourceOptions
from edge_agent.sources.geo import (
    ecef_to_enu,
    ecef_to_geodetic,
    enu_from_ecef_rotation,
    matrix_to_quat,
    quat_to_matrix,
)
from edge_agent.sources.sync import PoseTrack

__all__ = ["Comma2k19Source", "gps_to_unix_ns", "load_comma_array"]

GPS_EPOCH_UNIX_S = 315_964_800
GPS_UTC_LEAP_S = 18
_FRD_TO_FLU = np.diag([1.0, -1.0, -1.0])


def load_comma_array(path: Path) -> NDArray[np.float64]:
    """Load one comma2k19 array (``.npy`` content without the suffix) as float64."""
    try:
        with path.open("rb") as fh:
            return np.asarray(np.load(fh, allow_pickle=False), dtype=np.float64)
    except (OSError, ValueError, EOFError) as exc:
        raise SourceOpenError(
            str(path), f"not a readable NumPy array ({type(exc).__name__}: {exc})"
        ) from exc


def gps_to_unix_ns(week: NDArray[np.float64], tow_s: NDArray[np.float64]) -> NDArray[np.int64]:
    """GPS week + time of week (s) -> Unix ns (UTC), for dates after 2017-01-01."""
    seconds = GPS_EPOCH_UNIX_S - GPS_UTC_LEAP_S + week.astype(np.int64) * 604_800
    tow_ns = np.round(tow_s * 1e9).astype(np.int64)
    return seconds.astype(np.int64) * 1_000_000_000 + tow_ns


class Comma2k19Source(SourceBase):
    """A comma2k19 segment folder as pose-only frames at 20 Hz. See the module docstring."""

    def __init__(self, path: str | Path, options: SourceOptions | None = None) -> None:
        root = Path(path)
        opts = options or SourceOptions()
        super().__init__(root, opts)
        pose_dir = root / "global_pose"
        if not (pose_dir / "frame_times").is_file():
            raise SourceOpenError(str(root), "no global_pose/frame_times; not a comma2k19 segment")
        times = load_comma_array(pose_dir / "frame_times").reshape(-1)
        positions = load_comma_array(pose_dir / "frame_positions")
        orientations = load_comma_array(pose_dir / "frame_orientations")
        n = times.shape[0]
        if positions.shape != (n, 3) or orientations.shape != (n, 4):
            raise SourceOpenError(
                str(pose_dir),
                f"frame_positions {positions.shape} / frame_orientations {orientations.shape} "
                f"do not match frame_times ({n},)",
            )
        gps_path = pose_dir / "frame_gps_times"
        if gps_path.is_file():
            gps = load_comma_array(gps_path)
            if gps.shape != (n, 2):
                raise SourceOpenError(str(gps_path), f"shape {gps.shape}, expected ({n}, 2)")
            self.timestamps_ns = gps_to_unix_ns(gps[:, 0], gps[:, 1])
            self.absolute_time = True
        else:
            self.timestamps_ns = np.round(times * 1e9).astype(np.int64)
            self.absolute_time = False
        finite = np.all(np.isfinite(positions), axis=1) & np.all(np.isfinite(orientations), axis=1)
        if not finite.any():
            raise SourceOpenError(str(pose_dir), "no finite pose in the segment")
        first = int(np.argmax(finite))
        self.origin_ecef = positions[first].copy()
        self.enu_m = ecef_to_enu(positions, self.origin_ecef)
        self.lat_lon_alt = ecef_to_geodetic(positions)
        lat0, lon0, _ = self.lat_lon_alt[first]
        r_enu_ecef = enu_from_ecef_rotation(float(lat0), float(lon0))
        rot = r_enu_ecef @ quat_to_matrix(orientations) @ _FRD_TO_FLU
        self.orientations_wxyz = matrix_to_quat(rot)
        self._finite = finite

    def __len__(self) -> int:
        return int(self.timestamps_ns.shape[0])

    def pose_track(self) -> PoseTrack:
        """The whole segment's trajectory (ENU metres), e.g. for composing long drives."""
        keep = self._finite
        return PoseTrack(
            self.timestamps_ns[keep],
            self.enu_m[keep],
            self.orientations_wxyz[keep],
            self.lat_lon_alt[keep],
        )

    def frames(self) -> Iterator[Frame | SourceError]:
        for seq in range(len(self)):
            if self._closed:
                return
            pose = None
            if self._finite[seq]:
                p, q, g = self.enu_m[seq], self.orientations_wxyz[seq], self.lat_lon_alt[seq]
                pose = EgoPose(
                    position_m=(float(p[0]), float(p[1]), float(p[2])),
                    orientation_wxyz=(float(q[0]), float(q[1]), float(q[2]), float(q[3])),
                    lat_lon_alt=(float(g[0]), float(g[1]), float(g[2])),
                )
            yield self.make_frame(seq, int(self.timestamps_ns[seq]), pose, (), None)
