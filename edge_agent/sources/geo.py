"""Geodesy and rotations the readers need: WGS84 <-> ECEF <-> local ENU, quaternions.

Pure vectorised numpy; quaternions are ``(w, x, y, z)``, rotations are active (a
quaternion ``q`` maps vehicle coordinates into the reference frame).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "ecef_to_enu",
    "ecef_to_geodetic",
    "enu_from_ecef_rotation",
    "geodetic_to_ecef",
    "matrix_to_quat",
    "quat_multiply",
    "quat_to_matrix",
    "rpy_to_quat",
]

F64 = NDArray[np.float64]

WGS84_A = 6_378_137.0
WGS84_F = 1.0 / 298.257223563
WGS84_B = WGS84_A * (1.0 - WGS84_F)
WGS84_E2 = WGS84_F * (2.0 - WGS84_F)
WGS84_EP2 = (WGS84_A**2 - WGS84_B**2) / WGS84_B**2


def geodetic_to_ecef(lat_deg: F64, lon_deg: F64, alt_m: F64) -> F64:
    """WGS84 latitude / longitude (degrees) and ellipsoidal height (m) -> ECEF ``(N, 3)``."""
    lat = np.radians(np.asarray(lat_deg, dtype=np.float64))
    lon = np.radians(np.asarray(lon_deg, dtype=np.float64))
    alt = np.asarray(alt_m, dtype=np.float64)
    sin_lat = np.sin(lat)
    n = WGS84_A / np.sqrt(1.0 - WGS84_E2 * sin_lat**2)
    x = (n + alt) * np.cos(lat) * np.cos(lon)
    y = (n + alt) * np.cos(lat) * np.sin(lon)
    z = (n * (1.0 - WGS84_E2) + alt) * sin_lat
    return np.stack([x, y, z], axis=-1)


def ecef_to_geodetic(xyz: F64) -> F64:
    """ECEF ``(N, 3)`` -> ``(N, 3)`` latitude (deg), longitude (deg), height (m).

    Bowring's formula with two refinement steps: sub-millimetre for terrestrial points.
    """
    xyz = np.asarray(xyz, dtype=np.float64)
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    p = np.hypot(x, y)
    lon = np.arctan2(y, x)
    theta = np.arctan2(z * WGS84_A, p * WGS84_B)
    lat = np.arctan2(
        z + WGS84_EP2 * WGS84_B * np.sin(theta) ** 3,
        p - WGS84_E2 * WGS84_A * np.cos(theta) ** 3,
    )
    for _ in range(2):
        n = WGS84_A / np.sqrt(1.0 - WGS84_E2 * np.sin(lat) ** 2)
        alt = p / np.cos(lat) - n
        lat = np.arctan2(z, p * (1.0 - WGS84_E2 * n / (n + alt)))
    n = WGS84_A / np.sqrt(1.0 - WGS84_E2 * np.sin(lat) ** 2)
    alt = p / np.cos(lat) - n
    return np.stack([np.degrees(lat), np.degrees(lon), alt], axis=-1)


def enu_from_ecef_rotation(lat_deg: float, lon_deg: float) -> F64:
    """The 3x3 rotation taking ECEF vectors into east / north / up at (lat, lon)."""
    lat = np.radians(lat_deg)
    lon = np.radians(lon_deg)
    sl, cl = np.sin(lat), np.cos(lat)
    so, co = np.sin(lon), np.cos(lon)
    return np.array(
        [
            [-so, co, 0.0],
            [-sl * co, -sl * so, cl],
            [cl * co, cl * so, sl],
        ]
    )


def ecef_to_enu(xyz: F64, origin_ecef: F64) -> F64:
    """ECEF points ``(N, 3)`` -> ENU metres relative to ``origin_ecef`` (3,)."""
    origin = np.asarray(origin_ecef, dtype=np.float64)
    lat, lon, _ = ecef_to_geodetic(origin[None, :])[0]
    rot = enu_from_ecef_rotation(float(lat), float(lon))
    return (np.asarray(xyz, dtype=np.float64) - origin) @ rot.T


def quat_to_matrix(q: F64) -> F64:
    """Unit quaternions ``(..., 4)`` wxyz -> rotation matrices ``(..., 3, 3)``."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        axis=-2,
    )


def matrix_to_quat(m: F64) -> F64:
    """Rotation matrices ``(..., 3, 3)`` -> unit quaternions ``(..., 4)`` wxyz, ``w >= 0``.

    Shepperd's method: picks the numerically largest of the four candidate pivots.
    """
    m = np.asarray(m, dtype=np.float64)
    batch = m.shape[:-2]
    m = m.reshape(-1, 3, 3)
    m00, m11, m22 = m[:, 0, 0], m[:, 1, 1], m[:, 2, 2]
    trace = m00 + m11 + m22
    cands = np.stack(
        [
            np.stack(
                [
                    1 + trace,
                    m[:, 2, 1] - m[:, 1, 2],
                    m[:, 0, 2] - m[:, 2, 0],
                    m[:, 1, 0] - m[:, 0, 1],
                ],
                -1,
            ),
            np.stack(
                [
                    m[:, 2, 1] - m[:, 1, 2],
                    1 + m00 - m11 - m22,
                    m[:, 0, 1] + m[:, 1, 0],
                    m[:, 0, 2] + m[:, 2, 0],
                ],
                -1,
            ),
            np.stack(
                [
                    m[:, 0, 2] - m[:, 2, 0],
                    m[:, 0, 1] + m[:, 1, 0],
                    1 - m00 + m11 - m22,
                    m[:, 1, 2] + m[:, 2, 1],
                ],
                -1,
            ),
            np.stack(
                [
                    m[:, 1, 0] - m[:, 0, 1],
                    m[:, 0, 2] + m[:, 2, 0],
                    m[:, 1, 2] + m[:, 2, 1],
                    1 - m00 - m11 + m22,
                ],
                -1,
            ),
        ],
        axis=1,
    )
    pivots = np.stack([trace, m00, m11, m22], -1)
    best = np.argmax(pivots, axis=1)
    q = cands[np.arange(len(m)), best]
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    q = np.where(q[:, :1] < 0, -q, q)
    return np.asarray(q.reshape(*batch, 4), dtype=np.float64)


def quat_multiply(a: F64, b: F64) -> F64:
    """Hamilton product ``a * b`` of wxyz quaternions (broadcasting)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    aw, ax, ay, az = a[..., 0], a[..., 1], a[..., 2], a[..., 3]
    bw, bx, by, bz = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    return np.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        axis=-1,
    )


def rpy_to_quat(roll: F64, pitch: F64, yaw: F64) -> F64:
    """Roll, pitch, yaw (rad) applied as ``Rz(yaw) @ Ry(pitch) @ Rx(roll)`` -> wxyz."""
    hr, hp, hy = (np.asarray(v, dtype=np.float64) / 2.0 for v in (roll, pitch, yaw))
    cr, sr = np.cos(hr), np.sin(hr)
    cp, sp = np.cos(hp), np.sin(hp)
    cy, sy = np.cos(hy), np.sin(hy)
    return np.stack(
        [
            cy * cp * cr + sy * sp * sr,
            cy * cp * sr - sy * sp * cr,
            cy * sp * cr + sy * cp * sr,
            sy * cp * cr - cy * sp * sr,
        ],
        axis=-1,
    )
