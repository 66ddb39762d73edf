"""Synchronising sensors into frames by nearest timestamp.

The rule (docs/sources.md): one frame per *reference* message (the LiDAR sweep where the
layout has LiDAR, else the first selected camera). For each other sensor the message
nearest in time to the reference is attached if ``|t_sensor - t_ref| <= tolerance``;
otherwise the frame is built without that sensor. Ties go to the earlier message. A message
may serve two reference frames only if both lie within the tolerance of it (tolerance at
most half the reference period prevents that). Poses are interpolated, not matched.

Everything here is vectorised: ``np.searchsorted`` over sorted int64 nanosecond arrays,
O((n + m) log m) for a whole drive.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from edge_agent.frame import EgoPose
from edge_agent.sources.geo import quat_to_matrix

__all__ = ["PoseTrack", "match_nearest", "match_streams", "poses_at"]

I64 = NDArray[np.int64]
F64 = NDArray[np.float64]


def _as_sorted_ns(values: ArrayLike, what: str) -> I64:
    array = np.asarray(values, dtype=np.int64).reshape(-1)
    if array.size > 1 and bool(np.any(np.diff(array) < 0)):
        raise ValueError(f"{what} timestamps must be sorted ascending")
    return array


def match_nearest(ref_ns: ArrayLike, other_ns: ArrayLike, tolerance_ns: int) -> NDArray[np.intp]:
    """For each reference timestamp, the index of the nearest ``other`` timestamp within
    ``tolerance_ns``, else -1. ``other_ns`` must be sorted ascending.

    >>> match_nearest([100, 200, 300], [90, 215, 420], 20).tolist()
    [0, 1, -1]
    """
    if tolerance_ns < 0:
        raise ValueError(f"tolerance_ns must be >= 0, got {tolerance_ns}")
    ref = np.asarray(ref_ns, dtype=np.int64).reshape(-1)
    other = _as_sorted_ns(other_ns, "other")
    if other.size == 0:
        return np.full(ref.shape, -1, dtype=np.intp)
    right = np.searchsorted(other, ref, side="left")
    left = np.clip(right - 1, 0, other.size - 1)
    right = np.clip(right, 0, other.size - 1)
    d_left = np.abs(other[left] - ref)
    d_right = np.abs(other[right] - ref)
    best = np.where(d_left <= d_right, left, right)
    dist = np.minimum(d_left, d_right)
    return np.where(dist <= tolerance_ns, best, -1).astype(np.intp)


def match_streams(
    ref_ns: ArrayLike, streams: Mapping[str, ArrayLike], tolerance_ns: int
) -> dict[str, NDArray[np.intp]]:
    """``match_nearest`` for several sensors at once: name -> index array (-1 = none)."""
    return {name: match_nearest(ref_ns, ts, tolerance_ns) for name, ts in streams.items()}


@dataclass(frozen=True, slots=True, eq=False)
class PoseTrack:
    """A time-sorted pose log, queried by interpolation.

    Positions are interpolated linearly, orientations by normalised linear interpolation
    of quaternions (after flipping to the same hemisphere): exact enough between samples
    10-100 ms apart. A query more than ``tolerance_ns`` outside the logged span, or between
    two samples further apart than ``max_gap_ns``, has no pose.
    """

    timestamps_ns: I64
    positions_m: F64
    orientations_wxyz: F64 | None = None
    lat_lon_alt: F64 | None = None

    def __post_init__(self) -> None:
        _as_sorted_ns(self.timestamps_ns, "pose")
        n = self.timestamps_ns.shape[0]
        if self.positions_m.shape != (n, 3):
            raise ValueError(f"positions must be ({n}, 3), got {self.positions_m.shape}")
        if self.orientations_wxyz is not None and self.orientations_wxyz.shape != (n, 4):
            raise ValueError(f"orientations must be ({n}, 4), got {self.orientations_wxyz.shape}")
        if self.lat_lon_alt is not None and self.lat_lon_alt.shape != (n, 3):
            raise ValueError(f"lat_lon_alt must be ({n}, 3), got {self.lat_lon_alt.shape}")

    def __len__(self) -> int:
        return int(self.timestamps_ns.shape[0])

    def query(
        self, query_ns: ArrayLike, tolerance_ns: int, max_gap_ns: int = 1_000_000_000
    ) -> tuple[F64, F64 | None, F64 | None, NDArray[np.bool_]]:
        """Interpolated ``(positions, orientations, lat_lon_alt, valid)`` at each query."""
        q = np.asarray(query_ns, dtype=np.int64).reshape(-1)
        t = self.timestamps_ns
        n = t.shape[0]
        if n == 0:
            empty = np.full((q.size, 3), np.nan)
            return empty, None, None, np.zeros(q.size, dtype=bool)
        hi = np.clip(np.searchsorted(t, q, side="left"), 0, n - 1)
        lo = np.clip(hi - 1, 0, n - 1)
        span = (t[hi] - t[lo]).astype(np.float64)
        inside = (q >= t[0]) & (q <= t[-1])
        weight = np.where(
            inside & (span > 0), (q - t[lo]).astype(np.float64) / np.maximum(span, 1.0), 0.0
        )
        # Outside the span clamp to the end sample (only valid within the tolerance).
        lo = np.where(q < t[0], 0, np.where(q > t[-1], n - 1, lo))
        hi = np.where(q < t[0], 0, np.where(q > t[-1], n - 1, hi))
        weight = np.where(inside, weight, 0.0)
        w = weight[:, None]
        valid = (q >= t[0] - tolerance_ns) & (q <= t[-1] + tolerance_ns)
        valid &= np.where(inside, (t[hi] - t[lo]) <= max_gap_ns, True)
        pos = self.positions_m[lo] * (1.0 - w) + self.positions_m[hi] * w
        valid &= np.all(np.isfinite(pos), axis=1)
        quat = None
        if self.orientations_wxyz is not None:
            qa = self.orientations_wxyz[lo]
            qb = self.orientations_wxyz[hi]
            sign = np.where(np.sum(qa * qb, axis=1, keepdims=True) < 0, -1.0, 1.0)
            quat = qa * (1.0 - w) + qb * sign * w
            norm = np.linalg.norm(quat, axis=1, keepdims=True)
            quat = quat / np.where(norm > 0, norm, 1.0)
        lla = None
        if self.lat_lon_alt is not None:
            lla = self.lat_lon_alt[lo] * (1.0 - w) + self.lat_lon_alt[hi] * w
        return pos, quat, lla, valid

    def forward_axes(self) -> F64:
        """The vehicle's +x axis in the pose frame for every sample (``(N, 3)``)."""
        if self.orientations_wxyz is None:
            raise ValueError("this pose track has no orientations")
        return quat_to_matrix(self.orientations_wxyz)[:, :, 0]


def poses_at(
    track: PoseTrack | None, query_ns: ArrayLike, tolerance_ns: int
) -> list[EgoPose | None]:
    """One ``EgoPose`` (or ``None`` where the track has no pose) per query timestamp."""
    q = np.asarray(query_ns, dtype=np.int64).reshape(-1)
    if track is None or len(track) == 0:
        return [None] * q.size
    pos, quat, lla, valid = track.query(q, tolerance_ns)
    out: list[EgoPose | None] = []
    for i in range(q.size):
        if not valid[i]:
            out.append(None)
            continue
        out.append(
            EgoPose(
                position_m=(float(pos[i, 0]), float(pos[i, 1]), float(pos[i, 2])),
                orientation_wxyz=None
                if quat is None
                else (float(quat[i, 0]), float(quat[i, 1]), float(quat[i, 2]), float(quat[i, 3])),
                lat_lon_alt=None
                if lla is None
                else (float(lla[i, 0]), float(lla[i, 1]), float(lla[i, 2])),
            )
        )
    return out
